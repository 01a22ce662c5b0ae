"""How full the packed windows are: encoder passes per 1,000 short clips, packing each decode
chunk's clips in order (the earlier rule) vs longest first (first-fit decreasing, the current
rule), for chunks of 8 and 32 rows (`pipeline.items_per_decode_task`). Pure planning, no model:
the encoder's cost is one pass per input, so fewer inputs for the same audio is the saving.

Clip lengths: the shapes of short-utterance corpora, drawn with a fixed seed: uniform 5 s (the
GPU benchmarks' clips), lognormal around 4 s (Common Voice-like, cut at 1-15 s), uniform 2-15 s.

    python bench/bench_window_fill.py [--record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asrd.audio.pack import PackSettings, plan_windows  # noqa: E402
from bench.results import report  # noqa: E402


def in_order(lengths: list[float], s: PackSettings) -> list[list[int]]:
    """The earlier rule: clips in order, a new window when the next does not fit."""
    groups, current, used = [], [], 0.0
    for i, n in enumerate(lengths):
        need = n if not current else used + s.gap_s + n
        if current and need > s.window_s:
            groups.append(current)
            current, need = [], n
        current.append(i)
        used = need
    groups.append(current)
    return [g for g in groups if len(g) >= 2]


def inputs(lengths: np.ndarray, chunk: int, plan, s: PackSettings) -> tuple[int, float]:
    """(encoder inputs, mean seconds of clip audio per packed window) over all chunks."""
    n_inputs, packed_audio, windows = 0, 0.0, 0
    for a in range(0, len(lengths), chunk):
        part = [float(x) for x in lengths[a:a + chunk]]
        groups = plan(part, s)
        packed = {i for g in groups for i in g}
        n_inputs += len(groups) + (len(part) - len(packed))
        windows += len(groups)
        packed_audio += sum(part[i] for i in packed)
    return n_inputs, packed_audio / max(1, windows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=100_000)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    s = PackSettings()
    shapes = {
        "5 s": np.full(args.clips, 5.0),
        "lognormal ~4 s": np.clip(rng.lognormal(np.log(4.0), 0.5, args.clips), 1.0, 15.0),
        "uniform 2-15 s": rng.uniform(2.0, 15.0, args.clips),
    }
    figures = []
    for name, lengths in shapes.items():
        cells = []
        for chunk in (8, 32):
            for label, plan in (("in order", in_order), ("longest first", plan_windows)):
                n, fill = inputs(lengths, chunk, plan, s)
                cells.append(f"{label}, chunk {chunk}: {1000 * n / args.clips:.0f} ({fill:.1f} s)")
        figures.append((f"encoder inputs per 1,000 clips ({name}): in order / longest first, "
                        "chunks of 8 and 32 (mean clip audio per window)", "; ".join(cells),
                        f"{args.clips} clip lengths, seed 0, gap 1 s, 30 s windows, "
                        "clips over 15 s alone"))
    report("packing/window-fill", figures, args.record)


if __name__ == "__main__":
    main()
