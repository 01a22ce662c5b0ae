"""ASR engines behind one interface (`Engine`): a batch of 16 kHz mono segments in, texts out.
Built by name from the config (`registry`)."""

from __future__ import annotations

from omegaconf import DictConfig

from asrd.engines.base import (Engine, EngineUnavailable, Hypothesis, InputPreparer, PackedWindow,
                               Segment)
from asrd.engines.registry import build_engine, engine_kinds, is_vllm, register_engine

__all__ = ["Engine", "EngineUnavailable", "Hypothesis", "InputPreparer", "PackedWindow", "Segment",
           "build_engine", "engine_kinds", "is_vllm", "preparer_modules", "register_engine"]


def preparer_modules(engine_cfg: DictConfig) -> list[str]:
    """Modules a decode actor imports while the engines start, when it will prepare their inputs
    (vLLM's import takes seconds; done at once, it overlaps the engines' start-up)."""
    if not is_vllm(engine_cfg.kind) or engine_cfg.vllm.render_in != "decode":
        return []
    return ["asrd.engines.vllm_inputs", "vllm.renderers"]
