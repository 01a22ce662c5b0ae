"""Tracking: one W&B run per array task, one per merge, tqdm bars and one-line progress summaries.

Why: users watch a 1000-task run from W&B run pages and from SLURM log files; both show the same
few numbers, and tracking never costs the job: an unreachable W&B server falls back to offline
logging, and a failing W&B call is reported once and then ignored.

Runs. group = `run.name`; job_type = "shard" (a task) or "merge". Run config: the frozen config
(secret-looking values redacted), its hash, the task's shards and SLURM ids. A task's run id is
`<ARRAYJOB_TASK>-<digest of run name, config hash and run dir>`, with `resume="allow"`: a requeued
task continues the same run; another run dir, config or array job never appends to an old run.
W&B files go to `<wandb.dir or RUN_DIR>/wandb/`.

Requeue and offline mode (W&B #5865, #6952). Each (re)start of an offline task writes its own
fragment `offline-run-<time>-<id>` with the same id and, in its `.wandb` log, the resume intent;
`wandb sync RUN_DIR/wandb` syncs the fragments of one id one after another in start-time order
(wandb 0.31's `wandb sync --help`), resuming the run. The step is whole seconds since the task
*first* started (kept in `wandb/asrd-<id>.json`), so steps keep increasing across requeues and a
later fragment never overwrites an earlier one's history, whether W&B resumes online or offline
fragments are synced. Config and history are in the `.wandb` log from the start and flushed every
`wandb.log_every_s` (at least 1 s), so a task killed without warning loses at most that much.

Metrics. `TaskTracker.update` takes the pipeline's metrics of the shard it is on (keys on the
left, all optional; `shard` tells shards apart, so counters that restart at each shard add up to
task totals that only grow) and logs, at most every `wandb.log_every_s`:

  shard                                   progress/shard (the shard being worked on)
  items_done, items_total, items_failed   progress/items_done, progress/items_total,
                                          progress/items_failed: sums over the task's shards
  audio_s_done                            progress/audio_s_done: audio seconds, summed likewise
  failures/<reason>                       failures/<reason>: failed items, summed likewise
  elapsed_s                               progress/shard_elapsed_s (the pipeline's shard clock)
  <name>_ms_p<q>, e.g. decode_ms_p90      latency/<name>_ms_p<q> (current shard)
  queue_<stage>, e.g. queue_engine        queue/<stage>: items waiting before that stage
  any other key                           logged unchanged (current shard's value)
  derived by the tracker:
    throughput/items_per_s                items finished per wall second, since the last log
    throughput/audio_s_per_s              audio seconds per wall second, since the last log
    throughput/rtf                        real-time factor since the last log: wall seconds per
                                          audio second (0.002 = 500x faster than real time)
    throughput/items_per_s_avg, throughput/audio_s_per_s_avg, throughput/rtf_avg
                                          the same since this process's first update
    progress/elapsed_s                    seconds since this process's first update
    progress/shard_fraction               current shard: items_done / items_total
    progress/fraction                     task: (shards moved past + shard_fraction) / shards
    progress/eta_s                        seconds left at the average progress rate
    gpu/<i>/util_pct, gpu/<i>/mem_used_gib, gpu/<i>/mem_total_gib
                                          NVML (nvidia-ml-py), the GPUs in CUDA_VISIBLE_DEVICES;
                                          absent without NVML
    slurm/restart_count                   SLURM_RESTART_COUNT (requeues so far)

`log_merge` logs the merge run: the summary's scalars (a list or dict other than the failures
becomes its length), `audio_hours`, `failures/<reason>`, and tables `failures_by_reason`,
`throughput_per_shard` (+ bar chart `audio_s_per_s_by_shard`), `throughput_per_host` and
`samples` (transcripts with their audio).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from asrd.config import config_hash
from hpc.commit import read_json, write_json
from hpc.slurm_env import SlurmEnv

SAMPLE_RATE = 16000
SAMPLE_MAX_S = 30.0  # audio per sample row: enough for a quick listen, small to upload
SAMPLE_DECODE_MAX_S = 600.0  # longer files libsndfile cannot read get no sample audio
_SECRET_KEY = re.compile(r"api_?key|secret|passw|credential|private_?key|(^|_)token$",
                         re.IGNORECASE)
_LATENCY_KEY = re.compile(r".+_ms_p\d+$")
REDACTED = "<redacted>"


def _say(message: str) -> None:
    print(f"asrd: {message}", file=sys.stderr, flush=True)


def progress(total: int | None, desc: str, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal; a disabled one in batch logs (the periodic line covers those)."""
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), **{"unit": "item", **kwargs})


# --- what identifies a run -----------------------------------------------------------------------
def wandb_root(cfg: DictConfig, run_dir: Path) -> Path:
    """The `dir` handed to wandb.init; W&B writes below `<root>/wandb/`."""
    return Path(cfg.wandb.dir) if cfg.wandb.dir else Path(run_dir)


def task_run_id(cfg: DictConfig, run_dir: Path, env: SlurmEnv) -> str:
    """Stable across requeues of one task (same ARRAYJOB_TASK), new for any other run."""
    seed = f"{cfg.run.name}\0{config_hash(cfg)}\0{Path(run_dir).resolve()}"
    return f"{env.task_key}-{hashlib.sha256(seed.encode()).hexdigest()[:10]}"


def shard_label(shards: list[int]) -> str:
    if not shards:
        return "no-shards"
    if len(shards) == 1:
        return f"shard{shards[0]}"
    return f"shards{min(shards)}-{max(shards)}"


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """Replace values under secret-looking keys, and any known secret string, by REDACTED."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else
                redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str) and any(s and s in value for s in secrets):
        return REDACTED
    return value


def _known_secrets() -> tuple[str, ...]:
    return tuple(v for k, v in os.environ.items() if _SECRET_KEY.search(k) and len(v) >= 8)


def run_config(cfg: DictConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What W&B shows as the run's config: the frozen config, without secrets."""
    frozen = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    return redact({"asrd": frozen, "config_hash": config_hash(cfg), **extra}, _known_secrets())


# --- W&B runs ------------------------------------------------------------------------------------
def _drop_inherited_service() -> None:
    """Use a W&B service of our own, not one a parent process started (WANDB_SERVICE is
    "<version>-<pid>-..."): in a shared service, a killed task's stream keeps holding its run id,
    and its requeued successor is refused with "run ID ... is in use"."""
    parts = os.environ.get("WANDB_SERVICE", "").split("-")
    if len(parts) > 1 and parts[1] != str(os.getpid()):
        del os.environ["WANDB_SERVICE"]


def _init(cfg: DictConfig, root: Path, **kwargs: Any) -> Any:
    """wandb.init in the configured mode; online falls back to offline when W&B is unreachable."""
    import wandb

    root.mkdir(parents=True, exist_ok=True)
    _drop_inherited_service()
    mode = cfg.wandb.mode
    settings = wandb.Settings(silent=True,
                              x_transaction_log_flush_interval=max(1.0, cfg.wandb.log_every_s))
    common = dict(project=cfg.wandb.project, entity=cfg.wandb.entity, dir=str(root),
                  group=cfg.run.name, settings=settings, **kwargs)
    try:
        return wandb.init(mode=mode, **common)
    except Exception as e:  # noqa: BLE001 - W&B down must not fail a task
        if mode != "online":
            raise
        _say(f"W&B online init failed ({type(e).__name__}: {e}); logging offline instead")
        wandb.teardown()  # the failed stream keeps holding the run id in this service
        return wandb.init(mode="offline", **common)


def _finish(run: Any) -> None:
    """Finish and stop this process's W&B service: run.finish() can return before the `.wandb`
    log is fully written; the teardown waits for it, so the files are complete on return."""
    import wandb

    run.finish()
    wandb.teardown()


def _announce(run: Any) -> None:
    where = Path(run.settings.sync_dir)
    if run.settings.mode == "offline":
        _say(f"W&B run {run.id} (offline) in {where}; upload with: wandb sync {where.parent}")
    else:
        _say(f"W&B run {run.id}: {run.url}")


class _Gpus:
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
        out: dict[str, float] = {}
        for i, h in enumerate(self.handles):
            with contextlib.suppress(Exception):  # e.g. utilisation is not reported on MIG
                out[f"gpu/{i}/util_pct"] = float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu)
            with contextlib.suppress(Exception):
                mem = self.nvml.nvmlDeviceGetMemoryInfo(h)
                out[f"gpu/{i}/mem_used_gib"] = mem.used / 2**30
                out[f"gpu/{i}/mem_total_gib"] = mem.total / 2**30
        return out


SUMMED = ("items_done", "items_total", "items_failed", "audio_s_done")


def rename(metrics: Mapping[str, float | int]) -> dict[str, float | int]:
    """Pipeline keys -> logged names (see the module docstring)."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        if key in SUMMED or key == "shard":
            out[f"progress/{key}"] = value
        elif key == "elapsed_s":
            out["progress/shard_elapsed_s"] = value
        elif key.startswith("queue_"):
            out[f"queue/{key[6:]}"] = value
        elif _LATENCY_KEY.match(key):
            out[f"latency/{key}"] = value
        else:
            out[key] = value
    return out


def _rates(d_items: float, d_audio: float, d_wall: float, suffix: str) -> dict[str, float]:
    if d_wall <= 0:
        return {}
    out = {f"throughput/items_per_s{suffix}": d_items / d_wall,
           f"throughput/audio_s_per_s{suffix}": d_audio / d_wall}
    if d_audio > 0:
        out[f"throughput/rtf{suffix}"] = d_wall / d_audio
    return out


class _Steps:
    """The W&B step: whole seconds since the task first started, kept increasing across requeues
    (also across nodes whose clocks disagree a little) by a small state file next to the runs."""

    def __init__(self, path: Path | None):
        self.path = path
        saved = read_json(path) if path is not None and path.is_file() else {}
        self.first_start: float = saved.get("first_start", time.time())
        self.last: int = saved.get("last_step", -1)

    def next(self) -> int:
        self.last = max(self.last + 1, int(time.time() - self.first_start))
        return self.last

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, {"first_start": self.first_start, "last_step": self.last})


class TaskTracker:
    """Progress of one array task: a W&B run (unless disabled), a tqdm bar or periodic lines."""

    clock: Callable[[], float] = staticmethod(time.monotonic)  # rates and intervals

    def __init__(self, cfg: DictConfig, shards: list[int], env: SlurmEnv, run: Any = None,
                 steps: _Steps | None = None):
        self.cfg, self.shards, self.env, self.run = cfg, list(shards), env, run
        self.steps = steps or _Steps(None)
        self.label = f"{env.task_key} {shard_label(self.shards)}"
        self.gpus = _Gpus()
        self.bar = progress(100, self.label, bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"))
        self.tty = not self.bar.disable
        self.by_shard: dict[Any, dict[str, float | int]] = {}  # latest metrics, in order seen
        self.latest: dict[str, float | int] = {}  # current shard's metrics + task sums
        self.latest_logged: dict[str, float | int] = {}
        self.first: tuple[float, float, float, float] | None = None  # clock, items, audio, frac
        self.window: tuple[float, float, float, float] | None = None
        self.last_log = self.last_line = -math.inf
        self.broken = False

    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, shards: list[int]) -> TaskTracker:
        """`shards`: those this process will work on (its array task's shards not yet done)."""
        env = SlurmEnv.from_environ()
        if cfg.wandb.mode == "disabled":
            return cls(cfg, shards, env)
        run_id = task_run_id(cfg, run_dir, env)
        root = wandb_root(cfg, run_dir)
        try:
            run = _init(cfg, root, id=run_id, resume="allow", job_type="shard",
                        name=f"{cfg.run.name}-{shard_label(shards)}",
                        config=run_config(cfg, {"shards": list(shards), "slurm": {
                            "task_key": env.task_key, "job_id": env.job_id,
                            "array_job_id": env.array_job_id, "array_task_id": env.array_task_id,
                            "cpus": env.cpus, "gpus": env.gpus, "mem_mb": env.mem_mb}}))
        except Exception as e:  # noqa: BLE001 - tracking is not worth a failed task
            _say(f"W&B init failed ({type(e).__name__}: {e}); continuing without W&B")
            return cls(cfg, shards, env)
        steps = _Steps(root / "wandb" / f"asrd-{run_id}.json")
        steps.save()
        _announce(run)
        run.summary.update({"slurm/restart_count": env.restart_count, "slurm/node": env.node})
        return cls(cfg, shards, env, run, steps)

    # --- the pipeline's calls ---------------------------------------------------------------------
    def update(self, metrics: Mapping[str, float | int]) -> None:
        """Record the pipeline's metrics; logs and prints only when their interval has passed."""
        now = self.clock()
        shard = metrics.get("shard")
        self.by_shard.setdefault(shard, {}).update(metrics)
        self.latest = {**self.by_shard[shard], **self._sums()}
        if self.first is None:
            self.first = self.window = self._point(now)
        if self.tty:
            self._update_bar()
        if now - self.last_log >= self.cfg.wandb.log_every_s:
            self._log(now)
        if not self.tty and now - self.last_line >= self.cfg.pipeline.log_every_s:
            self.last_line = now
            m = self.latest_logged if self.last_log == now else self.snapshot(now)
            print(self.line(m), file=sys.stderr, flush=True)

    def finish(self, summary: Mapping[str, Any] | None = None, requeued: bool = False) -> None:
        """Log the final state; `requeued` marks the W&B run as preempting (it will continue)."""
        if self.first is not None:
            self._log(self.clock())
            if not self.tty:
                print(self.line(self.latest_logged), file=sys.stderr, flush=True)
        self.bar.close()
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(summary or {}))
            if requeued:
                self.run.mark_preempting()
            _finish(self.run)
            self.steps.save()
        except Exception as e:  # noqa: BLE001
            _say(f"W&B finish failed ({type(e).__name__}: {e})")
        self.run = None

    # --- internals --------------------------------------------------------------------------------
    def _sums(self) -> dict[str, float]:
        """Counters that restart at each shard, summed over the shards seen."""
        out: dict[str, float] = {}
        for m in self.by_shard.values():
            for k, v in m.items():
                if k in SUMMED or k.startswith("failures/"):
                    out[k] = out.get(k, 0) + v
        return out

    def _fractions(self) -> tuple[float, float] | None:
        """(current shard's, task's) fraction done; None until the pipeline gives items_total."""
        cur = next(reversed(self.by_shard.values()), {})
        if "items_total" not in cur:
            return None
        total = cur["items_total"]
        shard_f = cur.get("items_done", 0) / total if total else 1.0
        n = max(len(self.shards), len(self.by_shard))
        return shard_f, min(1.0, (len(self.by_shard) - 1 + shard_f) / n)

    def _point(self, now: float) -> tuple[float, float, float, float]:
        fractions = self._fractions()
        return (now, float(self.latest.get("items_done", 0)),
                float(self.latest.get("audio_s_done", 0.0)), fractions[1] if fractions else 0.0)

    def snapshot(self, now: float) -> dict[str, float | int]:
        """The logged metrics now (names in the module docstring)."""
        out = rename(self.latest)
        point = self._point(now)
        assert self.first is not None and self.window is not None
        for ref, suffix in ((self.window, ""), (self.first, "_avg")):
            out.update(_rates(point[1] - ref[1], point[2] - ref[2], point[0] - ref[0], suffix))
        out["progress/elapsed_s"] = now - self.first[0]
        fractions = self._fractions()
        if fractions is not None:
            out["progress/shard_fraction"], out["progress/fraction"] = fractions
            progress_rate = (point[3] - self.first[3]) / (now - self.first[0] or math.inf)
            if progress_rate > 0:
                out["progress/eta_s"] = (1.0 - point[3]) / progress_rate
        out.update(self.gpus.sample())
        out["slurm/restart_count"] = self.env.restart_count
        return out

    def _log(self, now: float) -> None:
        self.last_log = now
        self.latest_logged = self.snapshot(now)
        self.window = self._point(now)
        if self.run is None or self.broken:
            return
        try:
            self.run.log(self.latest_logged, step=self.steps.next())
        except Exception as e:  # noqa: BLE001 - one warning, then tracking stays off
            self.broken = True
            _say(f"W&B log failed ({type(e).__name__}: {e}); W&B logging off for this task")

    def _update_bar(self) -> None:
        """The task's bar counts fractions of its shards (item totals are known per shard only)."""
        fractions = self._fractions()
        if fractions is not None:
            self.bar.n = round(100 * fractions[1], 1)
        parts = [f"shard {self.latest['shard']}"] if "shard" in self.latest else []
        parts.append(f"{self.latest.get('items_done', 0)} items")
        if self.latest.get("items_failed"):
            parts.append(f"{self.latest['items_failed']} failed")
        self.bar.set_postfix_str(", ".join(parts), refresh=True)

    def line(self, m: Mapping[str, Any]) -> str:
        """One line for a SLURM log from a snapshot `m`: progress, rates (since the last W&B
        log), latency, queues, GPU, failures, ETA."""
        cur = next(reversed(self.by_shard.values()), {})
        parts = [f"asrd [{self.label}]"]
        if "shard" in cur or len(self.by_shard) > 1:
            where = f"shard {cur.get('shard', '?')} {cur.get('items_done', 0)}"
            if "items_total" in cur:
                where += f"/{cur['items_total']}"
            parts.append(where)
        head = f"{m.get('progress/items_done', 0)} items"
        if "progress/fraction" in m:
            head += f", {100 * m['progress/fraction']:.1f}% of task"
        reasons = {k[9:]: v for k, v in m.items() if k.startswith("failures/") and v}
        failed = m.get("progress/items_failed", sum(reasons.values()))
        if failed or reasons:
            head += f", {failed} failed" + (
                " (" + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + ")"
                if reasons else "")
        parts.append(head)
        if "throughput/items_per_s" in m:
            rate = f"{m['throughput/items_per_s']:.1f} items/s"
            if m.get("throughput/audio_s_per_s"):
                rate += f", {m['throughput/audio_s_per_s']:.0f}x real time"
            parts.append(rate)
        lat = [f"{k[8:].replace('_ms_', ' ')} {v:.0f} ms" for k, v in m.items()
               if k.startswith("latency/")]
        if lat:
            parts.append(", ".join(lat))
        queues = [f"{k[6:]} {v}" for k, v in m.items() if k.startswith("queue/")]
        if queues:
            parts.append("queue " + " ".join(queues))
        for k, v in m.items():
            if k.endswith("/util_pct"):
                i = k.split("/")[1]
                used = m.get(f"gpu/{i}/mem_used_gib")
                parts.append(f"gpu{i} {v:.0f}%" + (f" {used:.1f} GiB" if used is not None else ""))
        if "progress/eta_s" in m:
            parts.append(f"eta {_duration(m['progress/eta_s'])}")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# --- the merge run -------------------------------------------------------------------------------
@contextlib.contextmanager
def _staging_in(path: Path) -> Iterator[None]:
    """Keep W&B's media staging (tables, audio) next to the run, not in ~/.local/share, so that
    `wandb sync` of an offline merge run finds them from any node that sees the run dir."""
    old = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = old


def _sample_audio(sample: Mapping[str, Any]) -> Any:
    """wandb.Audio of the sample's first SAMPLE_MAX_S seconds, or None when it cannot be read."""
    import numpy as np
    import wandb

    caption = str(sample.get("id", ""))
    audio = sample.get("audio")
    if audio is not None:
        arr = np.asarray(audio, dtype=np.float32)[: int(SAMPLE_MAX_S * SAMPLE_RATE)]
        return wandb.Audio(arr, sample_rate=SAMPLE_RATE, caption=caption)
    path = sample.get("path")
    if not path:
        return None
    try:
        arr, rate = _read_head(str(path))
    except Exception as e:  # noqa: BLE001 - a sample without audio still shows its text
        _say(f"merge samples: cannot read {path} ({e}); row kept without audio")
        return None
    return wandb.Audio(arr, sample_rate=rate, caption=caption)


def _read_head(path: str) -> tuple[Any, int]:
    """The first SAMPLE_MAX_S seconds, mono: libsndfile reads just those; other formats (m4a,
    ...) go through asrd.audio's PyAV decoder, which decodes the whole file, so only up to
    SAMPLE_DECODE_MAX_S."""
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            head = f.read(frames=int(SAMPLE_MAX_S * f.samplerate), dtype="float32",
                          always_2d=True)
            return head.mean(axis=1), f.samplerate
    except sf.LibsndfileError:
        from asrd.audio import decode

        audio = decode(path, SAMPLE_RATE, max_duration_s=SAMPLE_DECODE_MAX_S)
        return audio[: int(SAMPLE_MAX_S * SAMPLE_RATE)], SAMPLE_RATE


def _shard_rows(per_shard: list[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for s in sorted(per_shard, key=lambda s: s.get("shard", 0)):
        wall, audio, n = float(s.get("wall_s") or 0), float(s.get("audio_s") or 0), s.get("rows", 0)
        rows.append([s.get("shard"), s.get("host") or "", n, s.get("failed", 0), audio, wall,
                     n / wall if wall else None, audio / wall if wall else None,
                     wall / audio if audio else None])
    return rows


def _host_rows(per_shard: list[Mapping[str, Any]]) -> list[list[Any]]:
    hosts: dict[str, list[float]] = {}
    for s in per_shard:
        h = hosts.setdefault(str(s.get("host") or ""), [0, 0.0, 0.0])
        h[0] += 1
        h[1] += float(s.get("audio_s") or 0)
        h[2] += float(s.get("wall_s") or 0)
    return [[host, int(n), audio, wall, audio / wall if wall else None]
            for host, (n, audio, wall) in sorted(hosts.items())]


def merge_totals(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The merge summary as W&B summary values: scalars kept, other lists and dicts counted."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if k in ("failures_by_reason", "per_shard"):
            continue
        out[k] = len(v) if isinstance(v, (list, tuple, dict)) else v
    if "audio_hours" not in out and "audio_s" in out:
        out["audio_hours"] = float(out["audio_s"]) / 3600
    return out


def log_merge(cfg: DictConfig, run_dir: Path, summary: Mapping[str, Any],
              per_shard: list[Mapping[str, Any]], samples: list[Mapping[str, Any]]) -> None:
    """One job_type=merge run: totals, hours, failures, throughput per shard and host, samples.

    summary: merge totals (e.g. rows, ok, failed, audio_hours or audio_s) and
    `failures_by_reason` (reason -> count). per_shard: one dict per merged shard (shard, host,
    rows, failed, audio_s, wall_s). samples: id, text, duration_s and `audio` (float32 16 kHz)
    or `path`.
    """
    if cfg.wandb.mode == "disabled":
        return
    import wandb

    root = wandb_root(cfg, run_dir)
    totals = merge_totals(summary)
    failures = dict(summary.get("failures_by_reason") or {})
    with _staging_in(root / "wandb" / "data"):
        try:
            run = _init(cfg, root, job_type="merge", name=f"{cfg.run.name}-merge",
                        config=run_config(cfg, {"shards": len(per_shard)}))
        except Exception as e:  # noqa: BLE001 - the merged output matters, not its W&B page
            _say(f"W&B init failed for the merge run ({type(e).__name__}: {e}); not logged")
            return
        _announce(run)
        rows = float(totals.get("rows") or 0)
        failure_table = wandb.Table(columns=["reason", "count", "fraction"], data=[
            [r, c, c / rows if rows else None]
            for r, c in sorted(failures.items(), key=lambda rc: -rc[1])])
        shard_table = wandb.Table(columns=[
            "shard", "host", "rows", "failed", "audio_s", "wall_s", "items_per_s",
            "audio_s_per_s", "rtf"], data=_shard_rows(per_shard))
        host_table = wandb.Table(columns=["host", "shards", "audio_s", "wall_s", "audio_s_per_s"],
                                 data=_host_rows(per_shard))
        sample_table = wandb.Table(columns=["id", "duration_s", "text", "audio"], data=[
            [str(s.get("id")), s.get("duration_s"), s.get("text"), _sample_audio(s)]
            for s in samples[: cfg.wandb.sample_rows]])
        run.log({"failures_by_reason": failure_table, "throughput_per_shard": shard_table,
                 "throughput_per_host": host_table, "samples": sample_table,
                 "audio_s_per_s_by_shard": wandb.plot.bar(
                     shard_table, "shard", "audio_s_per_s", title="audio s per s, by shard")})
        run.summary.update({**totals, **{f"failures/{r}": c for r, c in failures.items()}})
        _finish(run)
