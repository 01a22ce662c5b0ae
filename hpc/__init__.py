"""Generic cluster layer: SLURM environment, array bookkeeping, markers, commits, on-node Ray.

Nothing in this package knows about audio or models; it could serve any sharded batch job.
"""
