"""The run directory: where a run's frozen config, plan, shard files, markers and logs live.

RUN_DIR/
  config.yaml        the frozen config (written once by `asrd plan`)
  plan.json          shards as contiguous index row ranges, balanced by audio seconds; config hash
  shards/            shard-000007.parquet (committed), shard-000007.parts/ (in-shard checkpoint),
                     shard-000007.partial/ (segments of long recordings not finished yet)
  done/              shard-000007.json, the done-marker, written last
  rejected/          shard-000007.json, a marker that failed verification, with the reason
  claims/            lock files: who works on a shard now (and its host and pid), the plan and
                     merge locks
  logs/ submissions/ merged/ wandb/
Final names appear only by atomic rename (hpc.commit).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Union

from omegaconf import DictConfig

from asrd import config as config_mod
from asrd.done_marker import DoneMarker
from hpc.markers import Markers, UnreadableMarker, shard_name


ConfigLayer = Union[str, Path, dict, DictConfig]  # a config file, or a resolved config


class RunDirError(RuntimeError):
    """The run directory is missing, incomplete or belongs to another config."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.markers = Markers(self.path)
        self._frozen: tuple[tuple[int, int, int], DictConfig] | None = None  # (file key, config)

    # --- layout -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def plan_path(self) -> Path:
        return self.path / "plan.json"

    @property
    def shards_dir(self) -> Path:
        return self.path / "shards"

    @property
    def merged_dir(self) -> Path:
        return self.path / "merged"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def submissions_dir(self) -> Path:
        return self.path / "submissions"

    def shard_file(self, shard: int) -> Path:
        return self.shards_dir / self.shard_file_name(shard)

    def shard_file_name(self, shard: int) -> str:
        return f"{shard_name(shard)}.parquet"

    def merged_files(self) -> list[Path]:
        return sorted(self.merged_dir.glob("part-*.parquet"))

    def parts_dir(self, shard: int) -> Path:
        return self.shards_dir / f"{shard_name(shard)}.parts"

    def partial_dir(self, shard: int) -> Path:
        return self.shards_dir / f"{shard_name(shard)}.partial"

    # --- done-markers ----------------------------------------------------------------------------
    def done_marker(self, shard: int) -> DoneMarker | UnreadableMarker:
        return DoneMarker.from_json(self.markers.read(shard))

    def done_markers(self) -> dict[int, DoneMarker | UnreadableMarker]:
        """Every done-marker (one directory scan; `Markers.read_all`)."""
        return {s: DoneMarker.from_json(m) for s, m in self.markers.read_all().items()}

    # --- frozen config --------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file() and self.plan_path.is_file()

    def frozen_config(self) -> DictConfig:
        """The frozen config, loaded once per version of config.yaml (a command compares it with
        its own config more than once; a re-plan replaces the file, and so its key)."""
        return copy.deepcopy(self._frozen_config())  # the caller's own: it may change it

    def _frozen_config(self) -> DictConfig:
        """The loaded frozen config itself, for readers that do not keep or change it."""
        try:
            st = self.config_path.stat()
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a planned run directory (no config.yaml): "
                              "run `asrd plan` first") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._frozen is None or self._frozen[0] != key:
            self._frozen = (key, config_mod.load(self.config_path))
        return self._frozen[1]

    def config(self, layer: ConfigLayer | None = None, overrides: list[str] | None = None, *,
               check_drift: bool = True, force: bool = False) -> DictConfig:
        """The config a command on this run uses: the frozen config <- `layer` (a `-c` file, or
        a submission's resolved config) <- `overrides`. Drift in output-relevant keys is refused
        (unless `force`), so that one run directory never mixes two outputs."""
        cfg = config_mod.load([self._frozen_config()] + ([layer] if layer is not None else []),
                              overrides)  # load copies a config layer before it upgrades it
        if check_drift:
            self.check_config(cfg, force=force)
        return cfg

    def check_config(self, cfg: DictConfig, force: bool = False) -> None:
        """Refuse to mix outputs of two configs in one run directory (config drift)."""
        frozen = self._frozen_config()
        old, new = config_mod.config_hash(frozen), config_mod.config_hash(cfg)
        if old != new and not force:
            diff = config_mod.output_diff(frozen, cfg)
            raise RunDirError(
                f"config drift: {self.path} was planned with config {old}, this one is {new} "
                f"(output-relevant keys differ: {', '.join(diff[:8]) or 'none named'}). Keys "
                "that only say where and how it runs may change; for another output use another "
                "run.dir, or --force to run anyway.")
