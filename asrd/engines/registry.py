"""Engines by name: `engine.kind` picks one; its module is imported only when it is built, so CPU
nodes need no GPU packages. Beside the built-in kinds, an installed package may add kinds through
the `asrd.engines` entry-point group (name = "package.module:Class"; the tests' fault engine comes
this way), `register_engine` adds one at run time, and `engine.kind` may also name a class
directly ("package.module:Class"): a plug-in that subclasses a built-in engine is placed and
configured as that engine (its `engine.vllm.*` knobs, say)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from omegaconf import DictConfig

from asrd.engines.base import Engine, EngineUnavailable

_ENGINES: dict[str, str] = {
    "faster_whisper": "asrd.engines.faster_whisper_engine:FasterWhisperEngine",
    "transformers": "asrd.engines.transformers_engine:TransformersEngine",
    "vllm": "asrd.engines.vllm_engine:VllmEngine",
}
_PLUGINS_LOADED = False


def _targets() -> dict[str, str]:
    """The built-in kinds, those registered, and (read once) the installed plug-ins'."""
    global _PLUGINS_LOADED
    if not _PLUGINS_LOADED:
        for ep in entry_points(group="asrd.engines"):
            _ENGINES.setdefault(ep.name, ep.value)
        _PLUGINS_LOADED = True
    return _ENGINES


def register_engine(kind: str, target: str) -> None:
    """Make `engine.kind=KIND` build `target` ("package.module:Class", an `Engine` subclass)."""
    if ":" not in target:
        raise ValueError(f"engine target {target!r} must be 'module:Class'")
    _ENGINES[kind] = target


def engine_kinds() -> tuple[str, ...]:
    return tuple(_targets())


def engine_class(kind: str) -> type[Engine]:
    target = _targets().get(kind) or (kind if ":" in kind else None)
    if target is None:
        raise EngineUnavailable(f"unknown engine.kind {kind!r}: one of {engine_kinds()} "
                                "or a class, 'package.module:Class'")
    module, name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise EngineUnavailable(f"engine.kind {kind!r}: cannot import {target}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise EngineUnavailable(f"engine.kind {kind!r}: {target} is not an asrd Engine class")
    return cls


def engine_packs(cfg: DictConfig) -> bool:
    """Whether the run's decode actors pack short clips into shared windows: packing is on, the
    engine splits windows by time, and no language-ID pass routes clips one by one (a window
    has one language)."""
    return (bool(cfg.audio.pack.enabled) and not cfg.language_id.enabled
            and engine_class(cfg.engine.kind).packs(cfg.engine))


def is_vllm(kind: str) -> bool:
    """Whether `kind` is vLLM's engine or a plug-in class built on it."""
    if kind == "vllm" or ":" not in kind:
        return kind == "vllm"
    from asrd.engines.vllm_engine import VllmEngine  # imports no vLLM until an engine starts

    return issubclass(engine_class(kind), VllmEngine)


def build_engine(engine_cfg: DictConfig, quality: DictConfig | None = None) -> Engine:
    """The engine `engine_cfg.kind` names, built from its config (and the quality section:
    which signals to ask for)."""
    return engine_class(engine_cfg.kind).from_config(engine_cfg, quality)
