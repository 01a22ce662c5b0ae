import pytest
from omegaconf import OmegaConf

from asrd import config as config_mod
from asrd.config import ConfigError


def test_defaults_and_overrides():
    cfg = config_mod.load(None, ["run.index=/x.parquet", "engine.batch_size=4", "slurm.partition=gpu"])
    assert cfg.engine.kind == "faster_whisper" and cfg.engine.batch_size == 4
    assert cfg.slurm.partition == "gpu"


def test_yaml_files_in_configs_load():
    from pathlib import Path

    files = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        cfg = config_mod.load(f, ["run.index=/x.parquet"])
        assert cfg.run.num_shards >= 1


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="engine.batchsize"):
        config_mod.load(None, ["engine.batchsize=4"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="run.num_shards"):
        config_mod.load(None, ["run.num_shards=many"])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="engine.kind"):
        config_mod.load(None, ["engine.kind=magic"])
    with pytest.raises(ConfigError, match="run.num_shards"):
        config_mod.load(None, ["run.num_shards=0"])


def test_hash_covers_outputs_not_placement():
    base = config_mod.load(None, ["run.index=/x.parquet"])
    same = config_mod.load(None, ["run.index=/x.parquet", "slurm.partition=other", "slurm.mem_gb=99"])
    other = config_mod.load(None, ["run.index=/x.parquet", "engine.model=/models/large"])
    assert config_mod.config_hash(base) == config_mod.config_hash(same)
    assert config_mod.config_hash(base) != config_mod.config_hash(other)


def test_missing_index_is_clear():
    cfg = config_mod.load(None, [])
    assert OmegaConf.is_missing(cfg.run, "index")
    with pytest.raises(ConfigError, match="run.index is not set"):
        config_mod.require_index(cfg)


def test_cli_config_write_roundtrip(tmp_path):
    from asrd.cli import main

    out = tmp_path / "starter.yaml"
    assert main(["config", "--write", str(out), "run.name=x"]) == 0
    assert config_mod.load(out, ["run.index=/i.parquet"]).run.name == "x"
    assert main(["config", "engine.nope=1"]) == 2
