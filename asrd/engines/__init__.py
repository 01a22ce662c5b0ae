"""ASR engines behind one interface (`Engine`): a batch of 16 kHz mono segments in, texts out.
Built by name from the config (`registry`)."""

from __future__ import annotations

from omegaconf import DictConfig

from asrd.engines.base import Engine, EngineUnavailable, InputPreparer, Segment
from asrd.engines.registry import build_engine, engine_kinds, register_engine

__all__ = ["Engine", "EngineUnavailable", "InputPreparer", "Segment", "build_engine",
           "engine_kinds", "preparer_modules", "register_engine"]


def preparer_modules(engine_cfg: DictConfig) -> list[str]:
    """Modules a decode actor imports while the engines start, when it will prepare their inputs
    (vLLM's import takes seconds; done at once, it overlaps the engines' start-up)."""
    if engine_cfg.kind != "vllm":
        return []
    from asrd.engines.vllm_engine import VllmOptions  # imports no vLLM

    options, _ = VllmOptions.from_extra(dict(engine_cfg.get("extra") or {}))
    return ["asrd.engines.vllm_inputs", "vllm.renderers"] if options.render_in == "decode" else []
