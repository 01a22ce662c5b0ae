import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from asrd import config as config_mod
from asrd.config import ConfigError
from asrd.rundir import RunDir, RunDirError


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


def test_every_key_is_either_output_or_run():
    keys = config_mod.leaf_values(config_mod.load(None, []))
    both = [k for k in keys if config_mod._covered(k, config_mod.OUTPUT_KEYS)
            and config_mod._covered(k, config_mod.RUN_KEYS)]
    neither = [k for k in keys if not config_mod._covered(k, config_mod.OUTPUT_KEYS)
               and not config_mod._covered(k, config_mod.RUN_KEYS)]
    assert not both and not neither, f"classify in OUTPUT_KEYS or RUN_KEYS: {both + neither}"


RUN_ONLY = ["engine.num_engines=4", "engine.calls_in_flight=7", "engine.gpu_memory_utilization=0.5",
            "engine.batch_size=3", "engine.gpus_per_engine=0.5", "engine.device=cuda",
            "judge.batch_size=2", "pipeline.decode_actors=9", "pipeline.part_rows=5",
            "slurm.mem_gb=3", "slurm.partition=x", "store.cache_gb=1", "audio.read_retries=5"]


@pytest.mark.parametrize("override", RUN_ONLY)
def test_run_only_key_is_not_drift(tmp_path, override):
    rd = RunDir(tmp_path)
    base = ["run.index=/x.parquet"]
    (tmp_path / "config.yaml").write_text(config_mod.to_yaml(config_mod.load(None, base)))
    rd.check_config(config_mod.load(None, [*base, override]))  # accepted


@pytest.mark.parametrize("override", [
    "engine.beam_size=5", "engine.model=/m", "audio.vad.threshold=0.3", "audio.pack.max_clip_s=10",
    "judge.system_prompt=Rate it.", "engine.instruction=hi"])
def test_output_key_is_drift_naming_it(tmp_path, override):
    rd = RunDir(tmp_path)
    base = ["run.index=/x.parquet"]
    (tmp_path / "config.yaml").write_text(config_mod.to_yaml(config_mod.load(None, base)))
    key = override.split("=")[0]
    with pytest.raises(RunDirError, match=rf"config drift.*differ: {re.escape(key)}\)"):
        rd.check_config(config_mod.load(None, [*base, override]))


def test_missing_index_is_clear():
    cfg = config_mod.load(None, [])
    assert OmegaConf.is_missing(cfg.run, "index")
    with pytest.raises(ConfigError, match="run.index is not set"):
        config_mod.require_index(cfg)


CONFIGS = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("source", [None, *CONFIGS], ids=lambda p: p.name if p else "defaults")
def test_cli_config_write_loads_back_to_the_same_config(tmp_path, source):
    from asrd.cli import main

    out = tmp_path / "starter.yaml"
    overrides = ["run.name=x", "slurm.env.A=b c", "judge.user_template='Say: {text}'"]
    assert main(["config", "--write", str(out), *(["-c", str(source)] if source else []),
                 *overrides]) == 0
    assert (OmegaConf.to_container(config_mod.load(out))
            == OmegaConf.to_container(config_mod.load(source, overrides)))
    assert main(["config", "engine.nope=1"]) == 2


def test_config_write_says_what_every_key_does(tmp_path):
    from asrd.config_doc import field_help, starter_yaml

    cfg = config_mod.load(None, [])
    undocumented = [k for k in config_mod.leaf_values(cfg) if not field_help().get(k)]
    assert not undocumented, f"add a trailing comment in asrd/config.py to: {undocumented}"
    lines = starter_yaml(cfg).splitlines()
    i = lines.index("  max_segment_s: 30.0")
    assert lines[i - 1].startswith("  # [output] ")  # in the hash, and said so
    i = lines.index("  num_engines: 1")
    assert lines[i - 1] == "  # engine actors per node (several per GPU when gpus_per_engine < 1)"


def test_engine_sections_are_typed_and_checked_at_load(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("engine:\n  kind: vllm\n  vllm:\n    render_threads: 4\n    nope: 1\n")
    with pytest.raises(ConfigError, match=r"^invalid config key 'engine.vllm.nope': [^\n]*$"):
        config_mod.load(f)
    with pytest.raises(ConfigError, match="engine.transformers.dtype"):
        config_mod.load(None, ["engine.transformers.dtype=float16"])
    with pytest.raises(ConfigError, match="judge.vllm.max_model_len=0"):
        config_mod.load(None, ["judge.vllm.max_model_len=0"])


def test_old_extra_maps_move_to_the_typed_sections(tmp_path):
    f = tmp_path / "config.yaml"  # a run directory frozen before the typed sections
    f.write_text("engine:\n  extra:\n    render_in: engine\n    attn_implementation: sdpa\n"
                 "judge:\n  extra:\n    max_text_chars: 50\n    enforce_eager: true\n"
                 "merge:\n  filter: null\n")
    cfg = config_mod.load(f)
    assert cfg.engine.vllm.render_in == "engine"
    assert cfg.engine.transformers.attn_implementation == "sdpa"
    assert cfg.judge.max_text_chars == 50 and cfg.judge.vllm.enforce_eager is True
    assert list(cfg.merge.filter) == []
    assert list(config_mod.load(None, ["merge.filter=score >= 3"]).merge.filter) == ["score >= 3"]
    assert config_mod.load(None, ["engine.extra={}"]).engine.vllm.render_in == "decode"
    with pytest.raises(ConfigError, match="'engine.extra.block_size'"):
        config_mod.load(None, ["engine.extra.block_size=32"])


@pytest.mark.parametrize("overrides, key", [
    (["engine.kind=vllm", "audio.max_segment_s=45"], "audio.max_segment_s"),
    (["engine.kind=transformers", "audio.max_segment_s=31"], "audio.max_segment_s"),
    (["engine.kind=fault", "faults.inner=vllm", "audio.max_segment_s=40"], "audio.max_segment_s"),
    (["audio.max_segment_s=10", "audio.pack.max_clip_s=12"], "audio.pack.max_clip_s"),
    (["audio.pack.gap_s=-1"], "audio.pack.gap_s"),
    (["audio.vad.min_silence_ms=-5"], "audio.vad.min_silence_ms"),
    (["engine.kind=vllm", "engine.beam_size=4"], "engine.beam_size"),
    (["engine.kind=vllm", "engine.compute_type=float16", "engine.vllm.kv_cache_dtype=fp8"],
     "engine.vllm.kv_cache_dtype"),
    (["engine.kind=vllm", "engine.vllm.attention_backend=CUDNN"], "engine.vllm.attention_backend"),
    (["engine.gpu_memory_utilization=1.5"], "engine.gpu_memory_utilization"),
    (["engine.temperature=-0.1"], "engine.temperature"),
    (["engine.gpus_per_engine=0.5", "engine.tensor_parallel_size=2"], "engine.tensor_parallel_size"),
    (["slurm.mem_gb=0"], "slurm.mem_gb"),
    (["slurm.executor=pbs"], "slurm.executor"),
    (["judge.enabled=true"], "judge.model"),
    (["engine.kind=vllm", "engine.gpus_per_engine=0.5", "judge.enabled=true", "judge.model=m",
      "judge.kind=vllm", "judge.gpus_per_engine=0.5"], "judge.gpu_memory_utilization"),
    (["pipeline.part_seconds=-1"], "pipeline.part_seconds"),
    (["wandb.log_every_s=-0.5"], "wandb.log_every_s"),
])
def test_limits_between_keys_are_checked_at_load(overrides, key):
    with pytest.raises(ConfigError, match=rf"^invalid config value {re.escape(key)}="):
        config_mod.load(None, overrides)


def test_a_judge_sharing_the_gpu_fits_beside_the_engines():
    cfg = config_mod.load(None, [
        "engine.kind=vllm", "engine.gpus_per_engine=0.5", "engine.gpu_memory_utilization=0.6",
        "judge.enabled=true", "judge.model=m", "judge.kind=vllm", "judge.gpus_per_engine=0.5",
        "judge.gpu_memory_utilization=0.3"])
    assert cfg.judge.gpu_memory_utilization == 0.3


def test_an_fp8_kv_cache_is_fine_with_bfloat16():
    cfg = config_mod.load(None, ["engine.kind=vllm", "engine.compute_type=bfloat16",
                                 "engine.vllm.kv_cache_dtype=fp8"])
    assert cfg.engine.vllm.kv_cache_dtype == "fp8"


def test_a_long_segment_is_fine_for_faster_whisper():
    cfg = config_mod.load(None, ["engine.kind=faster_whisper", "audio.max_segment_s=60",
                                 "audio.pack.max_clip_s=50"])
    assert cfg.audio.max_segment_s == 60


def test_config_write_refuses_an_existing_file_unless_forced(tmp_path, capsys):
    """An edited starter file is never overwritten by a second `--write`; `--force` does."""
    from asrd.cli import main

    out = tmp_path / "run.yaml"
    assert main(["config", "--write", str(out)]) == 0
    out.write_text(out.read_text().replace("num_shards: 1", "num_shards: 7"))
    edited = out.read_text()
    capsys.readouterr()
    assert main(["config", "--write", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asrd: error:") and "exists" in err and "--force" in err
    assert out.read_text() == edited
    assert main(["config", "--write", str(out), "--force"]) == 0
    assert out.read_text() != edited and config_mod.load(out).run.num_shards == 1


def test_starter_file_leaves_out_the_test_only_fault_hooks(tmp_path):
    from asrd.cli import main

    out = tmp_path / "run.yaml"
    assert main(["config", "--write", str(out), "faults.kill_at=plan.locked"]) == 0
    text = out.read_text()
    assert "\nfaults:" not in text and "kill_at" not in text and "release_file" not in text
    assert config_mod.load(out).faults.kill_at is None  # the defaults: no hook armed
