"""`engine.kind` naming a class: a plug-in built on a built-in engine is that engine to the
config checks and the decode actors; a wrong name is a one-line error at load."""

from __future__ import annotations

import pytest

from asrd import config as config_mod
from asrd.engines import is_vllm, preparer_modules
from asrd.engines.registry import engine_class
from asrd.engines.base import EngineUnavailable

PLUGIN = "bench.gpu.timed_shape:TimedShapeVllmEngine"


def test_a_vllm_subclass_is_placed_and_prepared_as_vllm(tmp_path):
    pytest.importorskip("bench.gpu.timed_shape")
    assert is_vllm(PLUGIN) and is_vllm("vllm") and not is_vllm("faster_whisper")
    cfg = config_mod.load(None, [f"engine.kind={PLUGIN}", f"engine.model={tmp_path}"])
    # its inputs are rendered in the decode actors, as vLLM's are
    assert "asrd.engines.vllm_inputs" in preparer_modules(cfg.engine)
    # and vLLM's 30 s window holds for it
    with pytest.raises(config_mod.ConfigError, match="audio.max_segment_s"):
        config_mod.load(None, [f"engine.kind={PLUGIN}", "audio.max_segment_s=40"])


@pytest.mark.parametrize("kind, why", [("nosuch.module:Engine", "cannot import"),
                                       ("asrd.config:load", "not an asrd Engine")])
def test_a_wrong_plugin_is_refused_by_name(kind, why):
    with pytest.raises(EngineUnavailable, match=why):
        engine_class(kind)
