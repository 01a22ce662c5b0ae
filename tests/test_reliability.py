"""Config drift is refused before anything runs. (Crashes and signals: tests/test_faults.py.)"""

from asrd.cli import main as asrd_main
from asrd.plan import make_plan
from tests.conftest import make_cfg


def test_run_with_drifted_config_is_refused(corpus_index, tmp_path, capsys):
    cfg = make_cfg(corpus_index, tmp_path / "run")
    make_plan(cfg)
    base = [f"run.index={corpus_index}", f"run.dir={tmp_path / 'run'}", "run.num_shards=2",
            "pipeline.part_rows=2"]
    assert asrd_main(["run-shard", "--shard", "0", *base, "engine.beam_size=5"]) == 2
    assert "config drift" in capsys.readouterr().err
    assert asrd_main(["run-shard", "--shard", "7", *base]) == 2
    assert not (tmp_path / "run" / "done").exists()
