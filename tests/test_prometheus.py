"""Prometheus monitoring: the alert rules under promtool, the metrics of real `asrd run` tasks read
with Prometheus's own parser, and a real Prometheus server scraping a running task both ways
(node_exporter's textfile collector and the task's endpoint), all started here."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asrd import config
from asrd.schema import tally
from asrd.tracking import TaskTracker
from asrd.tracking.memory import memory_use
from asrd.tracking.prometheus import Reading, TaskLabels, families
from hpc.slurm_env import SlurmEnv
from tests.runs import cli_args, run_here, running, shard_rows, wait_until

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "configs" / "prometheus" / "asrd-rules.yml"
PROMETHEUS_SH = REPO / "hpc" / "scripts" / "prometheus_local.sh"
ROWS = 8
ONE_ROW_PER_CALL = ["engine.batch_size=1", "engine.calls_in_flight=1",
                    "pipeline.items_per_decode_task=1", "audio.pack.enabled=false"]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """(sample name, sorted labels) -> value of an exposition, read by prometheus_client's
    parser (Prometheus's text format)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    """The one sample `name` whose labels include `labels`; None if there is none."""
    hits = [v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items()]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


def textfile(folder: Path) -> Path | None:
    files = list(folder.glob("*.prom"))
    assert len(files) <= 1, files
    return files[0] if files else None


def monitoring(textfiles: Path, *extra: str) -> list[str]:
    return [f"monitoring.textfile_dir={textfiles}", "monitoring.every_s=0", *extra]


# --- the rules ------------------------------------------------------------------------------------
@pytest.mark.prometheus
def test_alert_rules_pass_promtool():
    for args in (["check", "rules", RULES.name], ["test", "rules", "asrd-rules.test.yml"]):
        res = subprocess.run(["promtool", *args], cwd=RULES.parent, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout


# --- labels and the file --------------------------------------------------------------------------
def _env(**fields) -> SlurmEnv:
    base = dict(job_id=None, array_job_id=None, array_task_id=None, restart_count=0, cpus=2,
                gpus=0, mem_mb=None, tmpdir="/tmp", node="n1")
    return SlurmEnv(**{**base, **fields})


def test_labels_name_the_array_task_the_job_or_the_process():
    array = TaskLabels.of("big run", _env(job_id="4251", array_job_id="4242", array_task_id=9))
    assert array.values() == ["big run", "4242", "9"]
    assert array.file_name() == "asrd-big_run-4242_9.prom"
    assert TaskLabels.of("r", _env(job_id="77")).values() == ["r", "77", "0"]
    local = TaskLabels.of("r", _env())
    assert local.slurm_job == "local" and local.task.isdigit()


def test_tracker_keys_become_prometheus_names_units_and_labels():
    """GPU readings (no GPU here: the tracker's keys as NVML gives them), quantiles, windows,
    and a key without a name of its own."""
    from prometheus_client import CollectorRegistry, generate_latest

    class Once:
        def collect(self):
            return families(TaskLabels("r", "7", "1"), "n1", "3", Reading(
                {"gpu/1/util_pct": 97.0, "gpu/1/mem_used_gib": 10.0, "latency/engine_ms_p90": 1400,
                 "throughput/items_per_s_avg": 2.5, "throughput/items_per_s": 3.0,
                 "engine/restarts": 1, "progress/items_done": 5},
                {3: {"progress/items_done": 5, "failures/corrupt audio": 2}}, 1e9))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Once())
    found = samples(generate_latest(registry).decode())
    task = {"run": "r", "slurm_job": "7", "task": "1"}
    assert value(found, "asrd_gpu_utilization_ratio", **task, gpu="1") == pytest.approx(0.97)
    assert value(found, "asrd_gpu_memory_used_bytes", gpu="1") == 10 * 2**30
    latency = value(found, "asrd_latency_seconds", stage="engine", quantile="0.9")
    assert latency == pytest.approx(1.4)
    assert value(found, "asrd_rows_per_second", window="task") == 2.5
    assert value(found, "asrd_rows_per_second", window="recent") == 3.0
    assert value(found, "asrd_engine_restarts", **task) == 1
    assert value(found, "asrd_rows_done_total", **task, shard="3") == 5  # the shard's, not twice
    assert value(found, "asrd_row_errors_total", shard="3", reason="corrupt audio") == 2
    assert value(found, "asrd_task_running") == 1


def test_an_unwritable_textfile_folder_costs_one_warning_not_the_task(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cfg = config.load(None, ["run.index=x", *monitoring(blocker)])
    t = TaskTracker(cfg, [0], _env())
    for done in (1, 2):
        t.update({"progress/shard": 0, "progress/items_done": done, "progress/items_total": 2})
    t.finish()
    err = capsys.readouterr().err
    assert err.count("not written") == 1 and "continuing without it" in err


def test_memory_counts_against_the_cgroup_limit(tmp_path):
    """A real cgroup v1 memory controller with a 1 GiB limit, this test's child process in it."""
    mount = Path("/sys/fs/cgroup/memory")
    group = mount / f"asrd-test-{tmp_path.name}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(2**30))
    except OSError as e:
        pytest.skip(f"no cgroup v1 memory controller to make a cgroup in here ({e})")
    try:
        code = ("import os, json; from asrd.tracking.memory import memory_use; "
                f"open('{group}/cgroup.procs', 'w').write(str(os.getpid())); "
                "block = bytearray(200 * 2**20); u = memory_use(); "
                "print(json.dumps([u.used_bytes, u.limit_bytes, u.scope]))")
        res = subprocess.run([sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=120, check=True)
        used, limit, scope = json.loads(res.stdout)
        assert (limit, scope) == (2**30, "cgroup")
        assert 200 * 2**20 <= used < limit
    finally:
        group.rmdir()
    node = memory_use()  # this process is in no limited cgroup: the node's memory
    assert node.scope == "node" and 0 < node.used_bytes < node.limit_bytes


# --- a real task ----------------------------------------------------------------------------------
def test_a_finished_task_leaves_its_metrics_in_the_textfile(corpus_index, tmp_path):
    """The real CPU engine (faster-whisper) under the fault hooks, one row failing: the final
    file says the task ended, and its counters are the shard file's rows, error reasons and
    audio seconds. The task runs in this process (on the tests' kept Ray session): the final
    file is the task's own last write, not its process's exit."""
    run_dir, textfiles = tmp_path / "run", tmp_path / "textfiles"
    args = cli_args(corpus_index, run_dir, "run.name=prom run", "engine.kind=fault",
                    "faults.inner=faster_whisper", f"faults.state_dir={tmp_path / 'faults'}",
                    "faults.fail_ids=[utt001.flac]", "pipeline.engine_retries=0",
                    *monitoring(textfiles))
    run_here(args)
    path = textfile(textfiles)
    assert path is not None and path.name == f"asrd-prom_run-local_{os.getpid()}.prom"
    assert not [p for p in textfiles.iterdir() if p != path]  # no temp file left
    found = samples(path.read_text())
    task = {"run": "prom run", "slurm_job": "local", "task": str(os.getpid())}
    shard = {**task, "shard": "0"}
    table = pq.read_table(run_dir / "shards" / "shard-000000.parquet")
    reasons: dict[str, int] = {}
    ok, failed, audio_s = tally(table, reasons)
    assert len(shard_rows(run_dir)) == ROWS and failed == 1
    assert value(found, "asrd_task_running", **task) == 0
    assert value(found, "asrd_task_exit_code", **task) == 0
    assert value(found, "asrd_task_info", **task, node=socket.gethostname(), shards="0") == 1
    assert value(found, "asrd_rows_done_total", **shard) == ROWS
    assert value(found, "asrd_rows_todo", **shard) == ROWS
    assert value(found, "asrd_rows_failed_total", **shard) == failed
    for reason, n in reasons.items():
        assert value(found, "asrd_row_errors_total", **shard, reason=reason) == n
    assert value(found, "asrd_audio_seconds_total", **shard) == pytest.approx(audio_s)
    assert value(found, "asrd_task_requeues", **task) == 0
    assert value(found, "asrd_queue_depth") is None  # live gauges end with the task
    assert 0 < value(found, "asrd_task_last_progress_timestamp_seconds", **task)
    names = {n for n, _ in found}
    assert all(n.startswith("asrd_") for n in names)
    assert all({"run", "slurm_job", "task"} <= dict(ls).keys() for _, ls in found)
    assert not any("job" in dict(ls) for _, ls in found)  # Prometheus's own label stays free


@pytest.mark.prometheus
def test_prometheus_scrapes_a_running_task_through_both_paths(corpus_index, tmp_path):
    """A task blocked in its engine: a real Prometheus server scrapes its endpoint (job `task`)
    and node_exporter's textfile collector (job `node`) and sees it running with the rows it
    finished; once released, the file gives the final counts, with the rules loaded."""
    run_dir, textfiles, state = tmp_path / "run", tmp_path / "textfiles", tmp_path / "faults"
    args = cli_args(corpus_index, run_dir, "engine.kind=fault", f"faults.state_dir={state}",
                    "faults.block_after_calls=3", f"faults.release_file={state / 'go'}",
                    *ONE_ROW_PER_CALL, *monitoring(textfiles, "monitoring.port=0",
                                                   "monitoring.addr=127.0.0.1"))
    log, server = tmp_path / "run.log", tmp_path / "prometheus"
    with running(args, log) as proc:
        wait_until(lambda: "metrics on http://" in log.read_text(), proc, "the endpoint", log)
        port = int(re.search(r"metrics on http://[^:]+:(\d+)/", log.read_text())[1])
        endpoint = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: (state / "blocked").exists() and _file_rows(textfiles) == 3, proc,
                   "the engine blocked after 3 rows", log)
        scraped = samples(urllib.request.urlopen(endpoint, timeout=30).read().decode())
        assert value(scraped, "asrd_task_running") == 1
        assert value(scraped, "asrd_rows_done_total", shard="0") == 3
        assert value(scraped, "asrd_queue_depth", stage="engine") is not None
        url = _start_prometheus(server, textfiles, f"127.0.0.1:{port}")
        try:
            labels = {"run": "asrd", "slurm_job": "local", "task": str(proc.pid), "shard": "0"}
            for job in ("task", "node"):
                wait_until(lambda: _values(url, f'asrd_rows_done_total{{job="{job}"}}') == [3],
                           proc, f"Prometheus scraped 3 rows from job {job}", log)
                [(got, _)] = _query(url, f'asrd_rows_done_total{{job="{job}"}}')
                assert labels.items() <= got.items() and got["job"] == job
                assert _values(url, f'asrd_task_running{{job="{job}"}}') == [1]
            (state / "go").touch()
            assert proc.wait(timeout=600) == 0
            _until(lambda: _values(url, 'asrd_task_running{job="node"}') == [0],
                   "Prometheus saw the task end")
            assert _values(url, 'asrd_rows_done_total{job="node"}') == [ROWS]
            rules = _get(url, "/api/v1/rules")["data"]["groups"][0]["rules"]
            assert sorted(r["name"] for r in rules) == [
                "AsrdGpuIdle", "AsrdHighErrorRate", "AsrdMemoryHigh", "AsrdTaskStalled"]
            assert {r["health"] for r in rules} == {"ok"}
        finally:
            subprocess.run(["bash", str(PROMETHEUS_SH), "stop", str(server)], timeout=120)
    assert len(shard_rows(run_dir)) == ROWS


def _file_rows(textfiles: Path) -> float | None:
    path = textfile(textfiles)
    return value(samples(path.read_text()), "asrd_rows_done_total") if path else None


def _start_prometheus(home: Path, textfiles: Path, target: str) -> str:
    res = subprocess.run(["bash", str(PROMETHEUS_SH), "start", str(home), str(textfiles),
                          str(RULES), target], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip().splitlines()[-1]


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


def _values(url: str, expr: str) -> list[float]:
    return [v for _, v in _query(url, expr)]


def _until(cond: Callable[[], bool], what: str, bound_s: float = 300) -> None:
    """Wait for Prometheus to scrape what is there; the bound only ends a broken test."""
    deadline = time.monotonic() + bound_s
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def _query(url: str, expr: str) -> list[tuple[dict, float]]:
    data = _get(url, "/api/v1/query?query=" + urllib.parse.quote(expr))["data"]["result"]
    return [({k: v for k, v in r["metric"].items() if k != "__name__"}, float(r["value"][1]))
            for r in data]
