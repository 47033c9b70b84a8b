"""Ray job: explain recorded neurons.  ray job submit -- python ray_jobs/explain.py --records RUN [flags]"""

from neuronscope.cli import job

if __name__ == "__main__":
    job("explain")
