"""GPU utilisation and memory from NVML (nvidia-ml-py), for the GPUs in CUDA_VISIBLE_DEVICES.

Why NVML: it reads the driver's counters without touching CUDA, so the tracker never creates a
CUDA context of its own next to the engine's. Without NVML, a driver or a GPU there are no GPU
metrics, and nothing fails.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any


class Gpus:
    """NVML readings of the GPUs this process may use; empty where NVML is absent."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is None:
                ids: list[str] = [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
            else:
                ids = [d.strip() for d in visible.split(",") if d.strip()]
            for d in ids:
                self.handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(d)) if d.isdigit()
                                    else pynvml.nvmlDeviceGetHandleByUUID(d))
        except Exception:  # noqa: BLE001 - no NVML, no driver or no GPU: no GPU metrics
            self.handles = []

    def sample(self) -> dict[str, float]:
        """gpu/<i>/util_pct, gpu/<i>/mem_used_gib, gpu/<i>/mem_total_gib, <i> counting the
        visible GPUs from 0."""
        out: dict[str, float] = {}
        for i, h in enumerate(self.handles):
            with contextlib.suppress(Exception):  # e.g. utilisation is not reported on MIG
                out[f"gpu/{i}/util_pct"] = float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            with contextlib.suppress(Exception):
                mem = self.nvml.nvmlDeviceGetMemoryInfo(h)
                out[f"gpu/{i}/mem_used_gib"] = mem.used / 2**30
                out[f"gpu/{i}/mem_total_gib"] = mem.total / 2**30
        return out
