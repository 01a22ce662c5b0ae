"""Packaging beyond what pyproject.toml can say: the sbatch templates live in the top-level
`sbatch/` folder, where users look for them, and are packaged from there (one source) as the data
package `asrd.sbatch_templates`."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["asrd*", "hpc*"]), "asrd.sbatch_templates"],
    package_dir={"asrd.sbatch_templates": "sbatch"},
    package_data={"hpc": ["scripts/*.sh"], "asrd.sbatch_templates": ["*.sbatch"],
                  "asrd.quality": ["hallucinations/*.txt"]},
)
