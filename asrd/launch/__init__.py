"""Launching a planned run on SLURM, one module per job: `slurm_params` (config -> SLURM
parameters), `selection` (which shards, in which tasks and arrays), `submit` (submitit, recorded
as it goes), `sbatch` (the plain sbatch script and what its tasks run), `slurm_view` (SLURM's
state of each shard) and `commands` (the command line)."""
