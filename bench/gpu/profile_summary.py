"""Where a vLLM engine's GPU time goes, read from a torch profiler trace (Chrome JSON, .gz or not).

vLLM's worker writes the trace (its `profiler_config`, `torch_profiler_with_stack=True`, so the
trace holds each launching thread's Python frames and nn.Module calls). Every GPU kernel, copy and
memset is tied to the CUDA call that launched it (their shared `correlation` id), and that call to
the frames around it on its thread. A kernel is then:

- `encoder`: launched inside vLLM's `_execute_mm_encoder` (or an encoder module);
- `decoder graph`: replayed from a CUDA graph (a pure decode step: no new request in the step);
- `decoder cross-attention` / `decoder self-attention` / `decoder mlp`: launched eagerly inside
  those decoder modules (a step that admits new requests runs eagerly: encoder-decoder models only
  capture CUDA graphs for steps without encoder inputs);
- `decoder compiled, outside graphs` (torch.compile's code between piecewise graphs), `decoder
  other` (eager, in the forward but outside those modules), `sampling`, `other`.

Steps are vLLM's `execute_model` calls; a step that runs the encoder is an encoder step.

    python bench/gpu/profile_summary.py TRACE.json.gz [--json OUT.json]

`kernel_table_shares` reads the kernel table vLLM writes beside the trace, where the trace is too
large to read in the time at hand.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
FRAME_CATEGORIES = ("python_function", "user_annotation")


@dataclass
class ProfileSummary:
    """GPU time by where it was launched from; times in milliseconds."""

    kernel_ms: dict[str, float] = field(default_factory=dict)  # by class
    top_kernels: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    span_ms: float = 0.0  # first GPU event's start to the last one's end
    busy_ms: float = 0.0  # union of GPU events over the span
    steps: int = 0
    encoder_steps: int = 0
    step_gpu_ms: dict[str, float] = field(default_factory=dict)  # mean kernel ms per step kind
    unmatched: int = 0  # GPU events whose launch was not in the trace

    def shares(self) -> dict[str, float]:
        total = sum(self.kernel_ms.values()) or 1.0
        return {k: round(v / total, 4) for k, v in sorted(self.kernel_ms.items(),
                                                          key=lambda kv: -kv[1])}


def load_events(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def frame_class(names: list[str], graph: bool) -> str:
    """The class of a launch from the names of the frames around it (outermost first)."""
    joined = " | ".join(names)
    if "_execute_mm_encoder" in joined or ("Encoder_" in joined and "Decoder" not in joined):
        return "encoder"
    if graph:
        return "decoder graph"
    inner = " | ".join(n for n in names if n.startswith("nn.Module:"))
    if "CrossAttention" in inner or "encoder_attn" in joined:
        return "decoder cross-attention"
    if "Attention" in inner:
        return "decoder self-attention"
    if "MLP" in inner:
        return "decoder mlp"
    if "sample" in joined.lower():
        return "sampling"
    if "torchinductor" in joined:
        return "decoder compiled, outside graphs"
    if "_model_forward" in joined or "gpu_model_runner: forward" in joined:
        return "decoder other"
    return "other"


def _launch_frames(events: list[dict]) -> dict[int, tuple[list[str], float, tuple]]:
    """correlation id -> (names of the frames around its launch, the launch's time, thread)."""
    by_thread: dict[tuple, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = e.get("cat")
        if cat in FRAME_CATEGORIES or cat in LAUNCH_CATEGORIES:
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out: dict[int, tuple[list[str], float, tuple]] = {}
    for thread, evs in by_thread.items():
        # outer frames first where two start together; a launch sorts after its frames
        evs.sort(key=lambda e: (float(e["ts"]), e.get("cat") in LAUNCH_CATEGORIES,
                                -float(e.get("dur", 0))))
        stack: list[tuple[float, str]] = []  # (end, name)
        for e in evs:
            ts = float(e["ts"])
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if e.get("cat") in LAUNCH_CATEGORIES:
                corr = (e.get("args") or {}).get("correlation")
                if corr is not None:
                    out[int(corr)] = ([n for _, n in stack] + [str(e["name"])], ts, thread)
            else:
                stack.append((ts + float(e.get("dur", 0)), str(e["name"])))
    return out


def _union_ms(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total / 1000.0


def summarize(events: list[dict], top: int = 6) -> ProfileSummary:
    launches = _launch_frames(events)
    classes = {corr: frame_class(names[:-1], graph="GraphLaunch" in names[-1])
               for corr, (names, _, _) in launches.items()}
    kernel_us: Counter = Counter()
    gpu_us: Counter = Counter()  # per launch (a CUDA graph's replay launches many kernels)
    by_name: dict[str, Counter] = defaultdict(Counter)
    intervals: list[tuple[float, float]] = []
    unmatched = 0
    for e in events:
        if e.get("ph") != "X" or e.get("cat") not in GPU_CATEGORIES:
            continue
        ts, dur = float(e["ts"]), float(e.get("dur", 0))
        intervals.append((ts, ts + dur))
        corr = (e.get("args") or {}).get("correlation")
        if corr is not None:
            gpu_us[int(corr)] += dur
        cls = classes.get(int(corr)) if corr is not None else None
        if cls is None:
            unmatched += 1
            cls = "unattributed"
        kernel_us[cls] += dur
        by_name[cls][str(e["name"])[:80]] += dur
    summary = ProfileSummary(unmatched=unmatched)
    summary.kernel_ms = {k: round(v / 1000.0, 3) for k, v in kernel_us.items()}
    summary.top_kernels = {k: [(n, round(us / 1000.0, 3)) for n, us in c.most_common(top)]
                           for k, c in by_name.items()}
    if intervals:
        summary.span_ms = round((max(e for _, e in intervals) - min(s for s, _ in intervals))
                                / 1000.0, 3)
        summary.busy_ms = round(_union_ms(intervals), 3)
    _count_steps(events, launches, classes, gpu_us, summary)
    return summary


def _count_steps(events: list[dict], launches: dict, classes: dict[int, str],
                 gpu_us: dict[int, float], summary: ProfileSummary) -> None:
    """Steps (execute_model frames) with and without the encoder, and their mean GPU time."""
    steps = sorted(((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)),
                     (e.get("pid"), e.get("tid")))
                    for e in events if e.get("ph") == "X" and e.get("cat") == "python_function"
                    and str(e.get("name", "")).endswith(": execute_model")
                    and "gpu_model_runner" in str(e.get("name", ""))))
    if not steps:
        return
    starts = [s for s, _, _ in steps]
    per_step: list[list] = [[0.0, False] for _ in steps]  # GPU us, ran the encoder
    for corr, (_, ts, thread) in launches.items():
        i = bisect.bisect_right(starts, ts) - 1
        if i < 0 or ts >= steps[i][1] or steps[i][2] != thread:
            continue
        per_step[i][0] += gpu_us.get(corr, 0.0)
        if classes[corr] == "encoder":
            per_step[i][1] = True
    summary.steps = len(steps)
    summary.encoder_steps = sum(1 for _, enc in per_step if enc)
    for kind, want in (("encoder steps", True), ("decode-only steps", False)):
        times = [us for us, enc in per_step if enc == want]
        if times:
            summary.step_gpu_ms[kind] = round(sum(times) / len(times) / 1000.0, 3)


def _seconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def kernel_table_shares(path: Path) -> dict[str, float]:
    """GPU kernel seconds by kind (attention, GEMM, other) from the table vLLM's worker writes
    beside the trace (`profiler_out_0.txt`, sorted by self CUDA time): cheap where the trace is
    too large to read. Kernel rows are those with no CPU time; CUDA-graph replays, which hold
    kernels listed on their own rows too, are left out."""
    out: Counter = Counter()
    for line in path.read_text().splitlines():
        cols = re.split(r"\s{2,}", line.strip())
        if len(cols) < 11 or not cols[10].isdigit() or "execute_context" in cols[0]:
            continue
        if _seconds(cols[2]) != 0.0:  # an operator's row, whose kernels have rows of their own
            continue
        name = cols[0]
        kind = ("attention" if "flash" in name.lower() else
                "gemm" if re.search(r"nvjet|gemm|tensorop|xmma", name) else "other")
        out[kind] += _seconds(cols[6])
    return {k: round(v, 6) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    summary = summarize(load_events(args.trace))
    print(f"PROFILE span {summary.span_ms:.1f} ms, GPU busy {summary.busy_ms:.1f} ms; steps "
          f"{summary.steps} ({summary.encoder_steps} with the encoder); mean GPU ms per step "
          f"{summary.step_gpu_ms}; unattributed GPU events {summary.unmatched}")
    for cls, share in summary.shares().items():
        print(f"PROFILE {cls}: {summary.kernel_ms[cls]:.1f} ms, {share:.1%}; top: "
              + "; ".join(f"{n} {ms:.1f}" for n, ms in summary.top_kernels[cls][:3]))
    if args.json:
        args.json.write_text(json.dumps({**asdict(summary), "shares": summary.shares()},
                                        indent=1))


if __name__ == "__main__":
    main()
