"""Engines behind one interface (`Engine`), built by name from the config."""

from __future__ import annotations

from omegaconf import DictConfig

from asrd.engines.base import Engine, EngineUnavailable, InputPreparer, Segment

__all__ = ["Engine", "EngineUnavailable", "InputPreparer", "Segment", "build_engine",
           "preparer_modules"]


def build_engine(engine_cfg: DictConfig) -> Engine:
    """Build the engine the config names; imports lazily so CPU nodes need no GPU packages."""
    kind = engine_cfg.kind
    if kind == "faster_whisper":
        from asrd.engines.faster_whisper_engine import FasterWhisperEngine

        return FasterWhisperEngine(engine_cfg)
    if kind == "transformers":
        from asrd.engines.transformers_engine import TransformersEngine

        return TransformersEngine(engine_cfg)
    if kind == "vllm":
        from asrd.engines.vllm_engine import VllmEngine

        return VllmEngine(engine_cfg)
    raise EngineUnavailable(f"unknown engine.kind {kind!r}")


def preparer_modules(engine_cfg: DictConfig) -> list[str]:
    """Modules a decode actor imports while the engines start, when it will prepare their inputs
    (vLLM's import takes seconds; done at once, it overlaps the engines' start-up)."""
    if engine_cfg.kind != "vllm":
        return []
    from asrd.engines.vllm_engine import VllmOptions  # imports no vLLM

    options, _ = VllmOptions.from_extra(dict(engine_cfg.get("extra") or {}))
    return ["asrd.engines.vllm_inputs", "vllm.renderers"] if options.render_in == "decode" else []
