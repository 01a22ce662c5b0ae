"""Launching a planned run on SLURM: submitit job arrays, plain sbatch templates, and the task entry points."""
