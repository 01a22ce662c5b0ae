"""The config a command on a planned run uses: the run's frozen config <- the `-c` file <- the
`key=value` overrides.

The file and the overrides are one layer of edits: keys that only say where and how the run
executes (SLURM resources, engines per node, batching, store) take effect; a key that changes the
output and differs from the frozen run is refused as config drift, naming it (unless forced).
Quality thresholds are not output (merge judges the stored signals by them again), so `asrd
merge`/`report`/`export` take them at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from asrd import config as config_mod
from asrd.rundir import RunDir, RunDirError
from hpc.store import check_root


@dataclass(frozen=True)
class OpenRun:
    run_dir: RunDir
    cfg: DictConfig  # frozen <- file <- overrides
    threshold_edits: dict[str, Any]  # quality thresholds the file or overrides set


def threshold_edits(layer: DictConfig | None, overrides: list[str],
                    cfg: DictConfig) -> dict[str, Any]:
    """The `quality.thresholds` keys that this command's `-c` file (`layer`, as read) or
    `key=value` overrides name, with their values in `cfg`: a merge judges by them on top of
    its preset's."""
    named: set[str] = set()
    if layer is not None:
        section = OmegaConf.select(layer, "quality.thresholds")
        named |= set(section or ())
    prefix = "quality.thresholds."
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith(prefix):
            named.add(key[len(prefix):])
    return {k: cfg.quality.thresholds[k] for k in sorted(named) if k in cfg.quality.thresholds}


def open_run(config_file: str | Path | None, overrides: list[str], check_drift: bool = True,
             force: bool = False) -> OpenRun:
    """The planned run named by the file and overrides (`run.dir`), with the config to use.

    The mount is checked first (from the file and overrides: the frozen config lies behind it),
    so that an unmounted store says so instead of "not planned". The `-c` file is read once."""
    layer = config_mod.read_file(Path(config_file)) if config_file is not None else None
    user = config_mod.load(layer, overrides)
    if user.store.require_mount is not None:
        check_root(user.run.dir, user.store.require_mount, must_exist=False)
    rd = RunDir(Path(user.run.dir).resolve())
    if not rd.exists():
        raise RunDirError(f"{rd.path} is not a planned run directory: run `asrd plan` first")
    cfg = rd.config(layer, overrides, check_drift=check_drift, force=force)
    return OpenRun(rd, cfg, threshold_edits(layer, overrides, cfg))
