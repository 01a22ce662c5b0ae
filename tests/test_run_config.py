"""Commands on a planned run use the `-c` file: resource edits take effect, output edits are
refused as drift naming the key (as for `key=value` overrides), and an unmounted store says so."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from asrd.cli import main as asrd_main
from asrd.rundir import RunDir
from hpc.commit import read_json


@pytest.fixture
def planned(tmp_path) -> tuple[Path, Path]:
    """A run planned from run.yaml (2 shards of a 4-row index); returns (run.yaml, run dir)."""
    index = tmp_path / "index.parquet"
    pq.write_table(pa.table({"id": list("abcd"), "path": [f"/a/{i}.wav" for i in "abcd"],
                             "duration_s": [1.0] * 4}), index)
    run = tmp_path / "run"
    cfg_file = tmp_path / "run.yaml"
    write(cfg_file, {"run": {"dir": str(run), "index": str(index), "num_shards": 2},
                     "slurm": {"mem_gb": 5, "executor": "local"}})
    assert asrd_main(["plan", "-c", str(cfg_file)]) == 0
    return cfg_file, run


def write(path: Path, tree: dict) -> None:
    path.write_text(yaml.safe_dump(tree))


def edit(path: Path, section: str, key: str, value) -> None:
    tree = yaml.safe_load(path.read_text())
    tree.setdefault(section, {})[key] = value
    write(path, tree)


def test_resource_edits_in_the_file_reach_the_submission(planned, capsys):
    cfg_file, run = planned
    edit(cfg_file, "slurm", "mem_gb", 3)
    edit(cfg_file, "engine", "num_engines", 3)
    assert asrd_main(["submit", "-c", str(cfg_file), "--dry-run"]) == 0
    assert "--mem=3072M" in capsys.readouterr().out
    assert asrd_main(["sbatch", "-c", str(cfg_file)]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --mem=3072M" in script
    (record_file,) = RunDir(run).submissions_dir.glob("*.json")
    record = read_json(record_file)
    # what its tasks run: the frozen config with the file's edits
    cfg = RunDir(run).config(record["config"], None, force=record["force"])
    assert cfg.engine.num_engines == 3 and cfg.slurm.mem_gb == 3


@pytest.mark.parametrize("command", [["submit", "--dry-run"], ["sbatch"], ["merge"],
                                     ["resubmit", "--dry-run"], ["run-shard", "--shard", "0"]])
def test_output_edit_in_the_file_is_drift_naming_the_key(planned, capsys, command):
    cfg_file, run = planned
    edit(cfg_file, "engine", "beam_size", 5)
    assert asrd_main([*command, "-c", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asrd: error: config drift") and "engine.beam_size" in err, err
    assert not RunDir(run).submissions_dir.exists()  # nothing recorded
    # exactly as the same edit given as an override
    edit(cfg_file, "engine", "beam_size", 1)
    assert asrd_main([*command, "-c", str(cfg_file), "engine.beam_size=5"]) == 2
    assert "engine.beam_size" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["status", "submit", "resubmit", "sbatch", "merge"])
def test_unmounted_store_is_named_not_plan_first(planned, tmp_path, capsys, command):
    cfg_file, run = planned
    mount = tmp_path / "mnt"  # a plain directory: not a mount point
    mount.mkdir()
    edit(cfg_file, "run", "dir", str(mount / "run"))
    edit(cfg_file, "store", "require_mount", str(mount))
    assert asrd_main([command, "-c", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert f"store.require_mount={mount} is not mounted" in err and "asrd plan" not in err, err


def test_status_names_the_output_keys_that_drifted(planned, capsys):
    """Status is never refused, but it says which output keys the others would refuse."""
    cfg_file, _ = planned
    assert asrd_main(["status", "-c", str(cfg_file)]) == 0
    assert "config drift" not in capsys.readouterr().out
    edit(cfg_file, "engine", "beam_size", 5)
    edit(cfg_file, "slurm", "mem_gb", 3)  # where it runs: not drift
    assert asrd_main(["status", "-c", str(cfg_file), "audio.vad.threshold=0.6"]) == 0
    out = capsys.readouterr().out
    assert "shards: 2 planned" in out
    assert "config drift: 2 output keys differ from the planned run" in out, out
    assert "  audio.vad.threshold: planned 0.5, now 0.6" in out
    assert "  engine.beam_size: planned 1, now 5" in out and "slurm.mem_gb" not in out
