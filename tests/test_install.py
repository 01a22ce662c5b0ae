"""asrd installed from its wheel (not editable, not this checkout) renders `asrd sbatch` and the
script runs under the local SLURM: what the package ships is all it needs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.rundir import RunDir
from hpc import slurm_ctl
from hpc.array_submit import read_records
from tests.test_slurm import TASK, slurm_cluster, wait_for  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    """The wheel of a copy of the sources (building in the checkout would leave build/ there)."""
    src = out / "src"
    for name in ("asrd", "hpc", "sbatch"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    (wheel,) = (out / "dist").glob("asrd-*.whl")
    return wheel


def venv_with(wheel: Path, folder: Path) -> Path:
    """A fresh venv holding the wheel; its dependencies are this interpreter's (a .pth line to
    its site-packages, whose own .pth files, e.g. an editable asrd, are not run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "asrd_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.slurm
def test_installed_wheel_renders_sbatch_that_runs(slurm_cluster, tmp_path):
    python = venv_with(build_wheel(tmp_path / "build"), tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    where = subprocess.run([python, "-c", "import asrd, hpc; print(asrd.__file__, hpc.__file__)"],
                           check=True, capture_output=True, text=True, env=env, cwd=work).stdout
    assert all(Path(p).is_relative_to(tmp_path / "venv") for p in where.split()), where

    pq.write_table(pa.table({"id": ["a", "b"], "path": ["/nowhere/a.wav", "/nowhere/b.wav"],
                             "duration_s": [1.0, 1.0]}), work / "index.parquet")
    run = work / "run"
    asrd = [str(python.parent / "asrd")]
    common = [f"run.dir={run}", "engine.kind=fault", "engine.cpus_per_engine=0.5"]
    subprocess.run([*asrd, "plan", "run.index=index.parquet", "run.num_shards=1", *common],
                   check=True, capture_output=True, env=env, cwd=work)
    rendered = subprocess.run([*asrd, "sbatch", *common, *TASK], capture_output=True, text=True,
                              env=env, cwd=work)
    assert rendered.returncode == 0, rendered.stderr
    assert f"exec {python} -m asrd.cli run-task" in rendered.stdout
    (work / "job.sbatch").write_text(rendered.stdout)
    job = subprocess.run(["sbatch", "--parsable", "job.sbatch"], check=True, capture_output=True,
                         text=True, env=env, cwd=work).stdout.strip()
    try:
        wait_for(lambda: RunDir(run).markers.done_shards() == {0}, 300,
                 "the installed package's task to finish the shard", run)
    finally:
        slurm_ctl.cancel([job])
    marker = RunDir(run).markers.read(0)
    assert marker["rows"] == marker["failed"] == 2  # two error rows ("missing file"), none lost
    (record,) = read_records(RunDir(run).submissions_dir)
    assert record.kind == "sbatch"


@pytest.mark.slurm
def test_failed_sbatch_writes_no_record(slurm_cluster, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    pq.write_table(pa.table({"id": ["a"], "path": ["/nowhere/a.wav"], "duration_s": [1.0]}),
                   work / "index.parquet")
    run = work / "run"
    cli = [sys.executable, "-m", "asrd.cli"]
    subprocess.run([*cli, "plan", "run.index=index.parquet", f"run.dir={run}"], check=True,
                   capture_output=True, cwd=work)
    bad = subprocess.run([*cli, "sbatch", f"run.dir={run}", "slurm.env={bad name: x}"],
                         capture_output=True, text=True, cwd=work)
    assert bad.returncode == 2 and "asrd: error: slurm.env" in bad.stderr, bad.stderr
    assert not read_records(RunDir(run).submissions_dir)
