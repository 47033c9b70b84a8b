"""Ray job: record activations.  ray job submit -- python ray_jobs/record.py --out RUN [record flags]"""

from neuronscope.cli import job

if __name__ == "__main__":
    job("record")
