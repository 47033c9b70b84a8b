"""Ray job: the whole pipeline.  ray job submit -- python ray_jobs/demo.py [--out RUN] [flags]"""

from neuronscope.cli import job

if __name__ == "__main__":
    job("demo")
