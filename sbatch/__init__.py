"""The sbatch templates (README.md), packaged from this folder as `asrd.sbatch_templates`."""
