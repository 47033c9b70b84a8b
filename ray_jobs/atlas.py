"""Ray job: build a run's atlas.  ray job submit -- python ray_jobs/atlas.py RUN [--out ATLAS]"""

from neuronscope.cli import job

if __name__ == "__main__":
    job("atlas")
