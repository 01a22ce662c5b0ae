"""A task's metrics in Prometheus's exposition format: a file for node_exporter's textfile
collector and/or an HTTP endpoint (prometheus-client), refreshed from the TaskTracker.

Why both: HPC sites run node_exporter on every node and take batch jobs' metrics through its
textfile collector (no port per job to find; the file outlives the job, so a task that died
shows as one whose progress stopped); sites that scrape jobs directly use the endpoint.

Every series is labelled `run` (run.name), `slurm_job` (the array job's id, else the job's;
`local` outside SLURM; not `job`, which Prometheus's scrape config sets) and `task` (the array
task's index, `0` for a job that is no array, the process id outside SLURM). Counters of one
shard also carry `shard`. The names follow Prometheus's conventions (base units, `_total` on
counters); the table is in the README. A tracker key without a name here is exposed as a gauge
named after it (`asrd_` + the key, `/` as `_`), so a new metric of the pipeline shows up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from asrd.tracking import console
from hpc.slurm_env import SlurmEnv

LABELS = ("run", "slurm_job", "task")


@dataclass(frozen=True)
class Spec:
    """One exposed metric: its name (a counter's without `_total`), kind, help and the factor
    from the tracker's unit to Prometheus's base unit."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    scale: float = 1.0


# One shard's counters (restarting at each shard and each process), labelled by shard.
SHARD_SPECS = {
    "progress/items_done": Spec("asrd_rows_done", "counter",
                                "Rows finished, transcribed or as error rows"),
    "progress/items_failed": Spec("asrd_rows_failed", "counter", "Error rows written"),
    "progress/items_cut_again": Spec("asrd_rows_cut_again", "counter",
                                     "Rows transcribed a second time in shorter segments"),
    "progress/audio_s_done": Spec("asrd_audio_seconds", "counter",
                                  "Audio seconds of the rows transcribed"),
    "progress/items_total": Spec("asrd_rows_todo", "gauge",
                                 "Rows of the shard this process has to do (not committed before)"),
}
ERRORS = Spec("asrd_row_errors", "counter", "Error rows by reason")
ERROR_PREFIX = "failures/"

# The task's gauges: a pattern of the tracker's key, its spec, and the labels its groups give.
TASK_SPECS: list[tuple[re.Pattern[str], Spec, Callable[[re.Match[str]], dict[str, str]]]] = []


def _task(pattern: str, spec: Spec,
          labels: Callable[[re.Match[str]], dict[str, str]] = lambda m: m.groupdict()) -> None:
    TASK_SPECS.append((re.compile(pattern), spec, labels))


def _window(m: re.Match[str]) -> dict[str, str]:
    return {"window": "task" if m["avg"] else "recent"}


_task(r"progress/shard", Spec("asrd_task_shard", "gauge", "The shard being worked on"))
_task(r"progress/fraction", Spec("asrd_task_progress_ratio", "gauge",
                                 "Fraction of the task's shards done"))
_task(r"progress/shard_fraction", Spec("asrd_shard_progress_ratio", "gauge",
                                       "Fraction of the current shard's rows done"))
_task(r"progress/eta_s", Spec("asrd_task_eta_seconds", "gauge",
                              "Seconds left at the task's average progress rate"))
_task(r"progress/elapsed_s", Spec("asrd_task_elapsed_seconds", "gauge",
                                  "Seconds since the pipeline's first report"))
_task(r"progress/shard_elapsed_s", Spec("asrd_shard_elapsed_seconds", "gauge",
                                        "Seconds spent on the current shard"))
_task(r"throughput/items_per_s(?P<avg>_avg)?", Spec(
    "asrd_rows_per_second", "gauge", "Rows finished per wall second (window: recent = since "
    "the previous refresh of the W&B metrics, task = since the task started)"), _window)
_task(r"throughput/audio_s_per_s(?P<avg>_avg)?", Spec(
    "asrd_audio_seconds_per_second", "gauge", "Audio seconds transcribed per wall second"),
    _window)
_task(r"throughput/rtf(?P<avg>_avg)?", Spec(
    "asrd_real_time_factor", "gauge", "Wall seconds per audio second"), _window)
_task(r"queue/(?P<stage>\w+)", Spec("asrd_queue_depth", "gauge",
                                    "Items waiting before a stage"))
_task(r"latency/(?P<stage>\w+)_ms_p(?P<q>\d+)", Spec(
    "asrd_latency_seconds", "gauge", "A stage's latency quantile over the current shard", 1e-3),
    lambda m: {"stage": m["stage"], "quantile": str(int(m["q"]) / 100)})
_task(r"engine/calls_in_flight", Spec("asrd_engine_calls_in_flight", "gauge",
                                      "Engine calls sent and not answered"))
_task(r"engine/starved_s", Spec("asrd_engine_starved_seconds", "gauge",
                                "Seconds the engines waited for input in the current shard"))
_task(r"gpu/(?P<gpu>\d+)/util_pct", Spec("asrd_gpu_utilization_ratio", "gauge",
                                         "GPU busy fraction (NVML)", 0.01))
_task(r"gpu/(?P<gpu>\d+)/mem_used_gib", Spec("asrd_gpu_memory_used_bytes", "gauge",
                                             "GPU memory in use (NVML)", 2**30))
_task(r"gpu/(?P<gpu>\d+)/mem_total_gib", Spec("asrd_gpu_memory_total_bytes", "gauge",
                                              "GPU memory size (NVML)", 2**30))
_task(r"memory/used_gib", Spec("asrd_memory_used_bytes", "gauge",
                               "The task's memory working set (cgroup, else the node)", 2**30))
_task(r"memory/limit_gib", Spec("asrd_memory_limit_bytes", "gauge",
                                "The memory limit it counts against (cgroup, else the node)",
                                2**30))
_task(r"slurm/restart_count", Spec("asrd_task_requeues", "gauge",
                                   "Times SLURM requeued the task (SLURM_RESTART_COUNT)"))

RUNNING = Spec("asrd_task_running", "gauge", "1 while the task runs, 0 once it has ended")
EXIT_CODE = Spec("asrd_task_exit_code", "gauge", "The task's exit status, once it has ended")
PROGRESS_AT = Spec("asrd_task_last_progress_timestamp_seconds", "gauge",
                   "Unix time when the task last finished a row (its start before the first)")
INFO = Spec("asrd_task_info", "gauge", "1; the node and the task's shards as labels")


@dataclass(frozen=True)
class TaskLabels:
    """The labels on every series of one task, and the file name they give."""

    run: str
    slurm_job: str
    task: str

    @classmethod
    def of(cls, run: str, env: SlurmEnv) -> TaskLabels:
        slurm_job = env.array_job_id or env.job_id
        if slurm_job is None:
            return cls(run, "local", str(os.getpid()))
        task = env.array_task_id if env.array_job_id else 0
        return cls(run, slurm_job, str(task))

    def values(self) -> list[str]:
        return [self.run, self.slurm_job, self.task]

    def file_name(self) -> str:
        """`asrd-RUN-JOB_TASK.prom`: a requeued task rewrites its own file."""
        return re.sub(r"[^\w.-]", "_", f"asrd-{self.run}-{self.slurm_job}_{self.task}") + ".prom"


@dataclass(frozen=True)
class Reading:
    """What one refresh exposes: the tracker's snapshot (task sums, current shard's gauges,
    rates, GPUs, memory) and each shard's own metrics."""

    task: Mapping[str, Any]
    shards: Mapping[Any, Mapping[str, Any]]
    last_progress: float  # unix time
    exit_code: int | None = None  # set once the task has ended


@dataclass
class Families:
    """Metric families being built, by name, in the order first seen."""

    labels: TaskLabels
    by_name: dict[str, Metric] = field(default_factory=dict)

    def add(self, spec: Spec, value: float, **extra: str) -> None:
        family = self.by_name.get(spec.name)
        if family is None:
            kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = kind(spec.name, spec.help, labels=[*LABELS, *extra])
            self.by_name[spec.name] = family
        family.add_metric([*self.labels.values(), *extra.values()], float(value) * spec.scale)


def families(labels: TaskLabels, node: str, shard_list: str, r: Reading) -> list[Metric]:
    """The families of one reading, in the order: task state, shards' counters, task gauges."""
    out = Families(labels)
    out.add(RUNNING, r.exit_code is None)
    if r.exit_code is not None:
        out.add(EXIT_CODE, r.exit_code)
    out.add(PROGRESS_AT, r.last_progress)
    out.add(INFO, 1, node=node, shards=shard_list)
    for shard, m in r.shards.items():
        for key, value in m.items():
            if key in SHARD_SPECS:
                out.add(SHARD_SPECS[key], value, shard=str(shard))
            elif key.startswith(ERROR_PREFIX):
                out.add(ERRORS, value, shard=str(shard), reason=key[len(ERROR_PREFIX):])
    for key, value in r.task.items():
        if key in SHARD_SPECS or key.startswith(ERROR_PREFIX) or not _is_number(value):
            continue
        if r.exit_code is not None and not key.startswith("slurm/"):
            continue  # rates, queues and readings mean nothing once the task has ended
        spec, extra = _task_spec(key)
        out.add(spec, value, **extra)
    return list(out.by_name.values())


def _task_spec(key: str) -> tuple[Spec, dict[str, str]]:
    for pattern, spec, labels in TASK_SPECS:
        m = pattern.fullmatch(key)
        if m:
            return spec, labels(m)
    name = "asrd_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
    return Spec(name, "gauge", f"The tracker's {key}"), {}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


class TaskExporter:
    """Exposes a task's readings through a textfile and/or an endpoint; tracking never costs
    the task, so a file that cannot be written or a port that is taken is one warning."""

    def __init__(self, cfg: DictConfig, env: SlurmEnv, shard_list: str):
        self.labels = TaskLabels.of(cfg.run.name, env)
        self.node, self.shard_list = env.node, shard_list
        self.reading: Reading | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        mon = cfg.monitoring
        self.path = Path(mon.textfile_dir) / self.labels.file_name() if mon.textfile_dir else None
        self.server = None
        if mon.port is not None:
            try:
                self.server, _ = start_http_server(mon.port, mon.addr, self.registry)
                console.say(f"metrics on http://{env.node}:{self.server.server_port}/metrics")
            except OSError as e:
                console.say(f"metrics endpoint not started ({e}); continuing without it")

    @classmethod
    def start(cls, cfg: DictConfig, env: SlurmEnv, shard_list: str) -> TaskExporter | None:
        """An exporter where monitoring has a textfile folder or a port; None where it is off."""
        mon = cfg.monitoring
        return cls(cfg, env, shard_list) if mon.textfile_dir or mon.port is not None else None

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector interface: the latest reading's families."""
        if self.reading is not None:
            yield from families(self.labels, self.node, self.shard_list, self.reading)

    def publish(self, reading: Reading) -> None:
        """Expose `reading`: the endpoint serves it from now on; the file is replaced whole."""
        self.reading = reading
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.path), self.registry)  # a temp file, then a rename
        except Exception as e:  # noqa: BLE001 - one warning, then the file stays as it was
            console.say(f"metrics file {self.path} not written ({type(e).__name__}: {e}); "
                        "continuing without it")
            self.path = None

    def close(self) -> None:
        """Stop the endpoint; the file stays with the final reading (running 0, exit code)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
