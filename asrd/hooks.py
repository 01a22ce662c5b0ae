"""Named points of asrd's work where a hook module may act: the seam through which tests inject
faults deterministically (a process killed or held at a chosen point, a decode actor dying on a
chosen row), with no clocks and no signals.

A run selects a hook module by the environment variable `ASRD_HOOKS` (a module path): the
environment reaches every process of a run (the CLI, its SLURM tasks, their Ray actors). Without
it, `at` does nothing. The module's settings are the config's `faults` section, which asrd
carries without reading it: a command passes its config's section with each point; an actor
process is given the section once (`configure`), as is a process that loads a config (for a
plug-in engine's settings, `settings()`).

A hook module defines `at(point: str, settings, **context)`; the points are named where they are
reached (e.g. "merge.tmp_made", "decode.item").
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf

ENV = "ASRD_HOOKS"

_settings: DictConfig | None = None
_modules: dict[str, ModuleType] = {}


def configure(settings: DictConfig | dict | None) -> None:
    """The hook settings of this process (the config's `faults` section)."""
    global _settings
    _settings = OmegaConf.create(settings) if isinstance(settings, dict) else settings


def settings() -> DictConfig | None:
    return _settings


def module() -> ModuleType | None:
    """The selected hook module, imported once per process; None when none is selected."""
    name = os.environ.get(ENV)
    if not name:
        return None
    if name not in _modules:
        _modules[name] = importlib.import_module(name)
    return _modules[name]


def at(point: str, settings: DictConfig | None = None, **context: Any) -> None:
    """Let the hook module act at `point` (it may kill the process, wait, or raise), with the
    command's hook settings (by default this process's)."""
    hooks = module()
    if hooks is not None:
        hooks.at(point, settings if settings is not None else _settings, **context)
