"""Where the engine actors landed: the GPUs Ray gave each, and which engines share a GPU.

Ray assigns GPUs by its own resource accounting (fractional `num_gpus` puts several actors on
one GPU; an integer number gives an actor whole GPUs of its own) and sets each actor's
CUDA_VISIBLE_DEVICES from that assignment. The ids are what Ray read from the node's
CUDA_VISIBLE_DEVICES at start (SLURM's physical ids), so they name physical GPUs.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import ray
from omegaconf import DictConfig


def assigned_gpus() -> list[str]:
    """The GPU ids Ray assigned to the calling actor (none outside an actor holding GPUs)."""
    return [str(x) for x in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]


def engine_gpus(engine_cfg: DictConfig) -> float:
    """GPUs one engine actor asks Ray for: a tensor-parallel engine runs its model's workers
    inside its own actor, so it holds all `tensor_parallel_size` GPUs (never fewer)."""
    share = float(engine_cfg.gpus_per_engine)
    if share > 0 and int(engine_cfg.tensor_parallel_size) > 1:
        return max(share, float(engine_cfg.tensor_parallel_size))
    return share


@dataclass(frozen=True)
class Placement:
    """Each engine's GPU ids (by engine number), as Ray assigned them."""

    engine_gpus: tuple[tuple[str, ...], ...]

    def sharing(self) -> dict[str, list[int]]:
        """Which engines use each GPU (GPU id -> engine numbers)."""
        out: dict[str, list[int]] = collections.defaultdict(list)
        for k, gpus in enumerate(self.engine_gpus):
            for g in gpus:
                out[g].append(k)
        return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))

    def describe(self) -> str:
        """One line for the log, e.g. `GPU 0: engines 0, 8; GPU 1: engines 1, 9`."""
        shared = self.sharing()
        if not shared:
            return f"{len(self.engine_gpus)} engines on CPUs"
        return "; ".join(f"GPU {g}: engine{'s' if len(ks) > 1 else ''} "
                         f"{', '.join(map(str, ks))}" for g, ks in shared.items())
