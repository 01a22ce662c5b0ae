"""W&B tracking, checked against the files the real wandb writes in offline mode.

The `.wandb` transaction log is read back with a small reader of its record format (the LevelDB
log layout wandb uses, records are `wandb.proto` messages): what `wandb sync` would upload.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from asrd import config, tracking
from asrd.tracking import wandb_run
from hpc.slurm_env import SlurmEnv

FAKE_KEY = "fakekey-" + "0123456789abcdef" * 3  # W&B wants 40+ characters
REPO = Path(__file__).resolve().parents[1]


# --- reading what wandb wrote --------------------------------------------------------------------
def _records(path: Path):
    """Protobuf records of a .wandb file: 7-byte header, then 32 KiB blocks of chunks with a
    7-byte header each (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as wandb_pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        else:
            pending += chunk
        if kind in (1, 4):
            record = wandb_pb.Record()
            record.ParseFromString(pending)
            yield record


def _items(items) -> dict[str, Any]:
    return {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in items}


def read_run(wandb_file: Path) -> dict[str, Any]:
    """The run record, history rows (by step) and final summary of one offline fragment."""
    out: dict[str, Any] = {"history": [], "summary": {}, "exit": False, "preempting": False}
    for r in _records(wandb_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"] = _items(r.run.config.update)
        elif kind == "history":
            out["history"].append(_items(r.history.item))
        elif kind == "summary":
            out["summary"].update(_items(r.summary.update))
        elif kind == "exit":
            out["exit"] = True
            out["exit_code"] = r.exit.exit_code
        elif kind == "preempting":
            out["preempting"] = True
    return out


def fragments(wandb_dir: Path) -> list[Path]:
    """Offline run fragments in start-time order (the order `wandb sync` uploads them)."""
    return sorted(wandb_dir.glob("offline-run-*/run-*.wandb"))


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def wb_env(tmp_path, monkeypatch):
    """A hermetic W&B: no network, caches and credentials in tmp, a fake key that must not leak."""
    home = tmp_path / "home"
    env = {"WANDB_SILENT": "true", "WANDB_CACHE_DIR": str(home / "cache"),
           "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_DATA_DIR": str(home / "data"),
           "WANDB_API_KEY": FAKE_KEY, "SLURM_JOB_ID": "778", "SLURM_ARRAY_JOB_ID": "777",
           "SLURM_ARRAY_TASK_ID": "3"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(k, raising=False)
    return home


def _cfg(tmp_path: Path, *overrides: str):
    return config.load(None, [f"run.dir={tmp_path / 'run'}", "run.name=demo",
                              "wandb.mode=offline", *overrides])


def assert_no_secret(*roots: Path) -> None:
    for root in roots:
        for f in root.rglob("*"):
            if f.is_file():
                assert FAKE_KEY.encode() not in f.read_bytes(), f"API key written to {f}"


class Clock:
    """Drives one tracker's rates and intervals deterministically (wall time stays real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- metrics, rate limiting, progress lines (W&B disabled) ---------------------------------------
def test_metrics_are_derived_and_lines_printed_at_their_interval(tmp_path, wb_env, capsys):
    cfg = _cfg(tmp_path, "wandb.mode=disabled", "wandb.log_every_s=2", "pipeline.log_every_s=5")
    t = tracking.TaskTracker.start(cfg, tmp_path / "run", [7, 8])
    t.clock = clock = Clock()
    assert t.run is None and not t.tty  # pytest's stderr is no terminal: lines, no bar
    # one update per second, 40 items/s, 200 audio-s/s; the pipeline's counters restart at
    # shard 8 (second 5), the task's sums keep growing
    for i in range(11):
        shard, n = (7, i) if i <= 5 else (8, i - 5)
        t.update({"progress/shard": shard, "progress/items_done": 40 * n,
                  "progress/items_total": 200 if shard == 7 else 400,
                  "progress/items_failed": 1 if shard == 7 else 0,
                  "progress/audio_s_done": 200.0 * n, "progress/shard_elapsed_s": float(n),
                  "latency/decode_ms_p90": 12.5, "latency/engine_ms_p50": 800,
                  "queue/engine": 4, "engine/calls_in_flight": 3, "engine/starved_s": 0.5,
                  **({"failures/too_long": 1} if shard == 7 else {})})
        clock.now += 1
    m = t.latest_logged  # logged at t = 0, 2, ..., 10
    assert m["progress/shard"] == 8 and m["progress/items_done"] == 400
    assert m["progress/items_failed"] == 1 and m["failures/too_long"] == 1
    assert m["progress/audio_s_done"] == 2000 and m["progress/shard_elapsed_s"] == 5
    assert m["throughput/items_per_s"] == pytest.approx(40)
    assert m["throughput/audio_s_per_s"] == pytest.approx(200)
    assert m["throughput/rtf"] == pytest.approx(1 / 200)
    assert m["throughput/items_per_s_avg"] == pytest.approx(40)
    assert m["progress/shard_fraction"] == pytest.approx(0.5)
    assert m["progress/fraction"] == pytest.approx(0.75)  # shard 7 done, shard 8 half
    assert m["progress/eta_s"] == pytest.approx(0.25 / (0.75 / 10))
    assert m["latency/decode_ms_p90"] == 12.5 and m["queue/engine"] == 4
    assert m["engine/calls_in_flight"] == 3 and m["engine/starved_s"] == 0.5
    assert m["slurm/restart_count"] == 0 and m["progress/elapsed_s"] == 10
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("asrd [")]
    assert len(lines) == 3  # t = 0, 5, 10 with pipeline.log_every_s = 5
    assert lines[-1].startswith("asrd [777_3 shards7-8] | shard 8 200/400 | 400 items, 75.0% of")
    assert "1 failed (too_long 1)" in lines[-1] and "eta 0m03s" in lines[-1]
    assert "40.0 items/s, 200x real time" in lines[-1]
    assert "decode p90 12 ms, engine p50 800 ms" in lines[-1] and "queue engine 4" in lines[-1]
    assert "| shard 7 200/200 | 200 items, 50.0% of task" in lines[1]  # t = 5, between logs
    t.finish({"rows": 400})


def test_progress_bar_on_a_terminal_lines_in_a_log(tmp_path, wb_env):
    bar = tracking.progress(10, "x")
    assert bar.disable  # stderr is captured here
    bar.close()
    # the same task with stderr on a terminal (a pty of 100 columns) draws a bar instead
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    done = _task(tmp_path, 4, "finish", "wandb.mode=disabled", stderr=child)
    os.close(child)
    out = b""
    with contextlib.suppress(OSError):
        while chunk := os.read(parent, 65536):
            out += chunk
    os.close(parent)
    assert done.returncode == 0
    text = out.decode(errors="replace")
    assert "777_3 shard3:  40%|" in text and ", 40 items]" in text
    assert "asrd [" not in text  # no periodic lines on a terminal


def test_secrets_are_redacted_from_the_run_config(tmp_path, wb_env):
    cfg = _cfg(tmp_path, f"slurm.env.WANDB_API_KEY={FAKE_KEY}", "slurm.env.HF_HOME=/models",
               f"engine.instruction=key is {FAKE_KEY}")
    conf = tracking.run_config(cfg, {})
    assert conf["asrd"]["slurm"]["env"] == {"WANDB_API_KEY": "<redacted>", "HF_HOME": "/models"}
    assert conf["asrd"]["engine"]["instruction"] == "<redacted>"
    assert FAKE_KEY not in json.dumps(conf)


class FakeRun:
    """What TaskTracker touches of a wandb Run, without a W&B service."""

    def __init__(self, sync_dir: Path) -> None:
        self.settings = SimpleNamespace(sync_dir=str(sync_dir))
        self.summary: dict[str, Any] = {}
        self.logged: list[dict[str, Any]] = []
        self.preempting = False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.logged.append(metrics)

    def mark_preempting(self) -> None:
        self.preempting = True


def test_finish_returns_while_the_w_and_b_finish_hangs(tmp_path, wb_env, monkeypatch, capsys):
    """A W&B service that SLURM's signal left dead or hung must not hold the task: finish gives
    up after its timeout, says so once and returns while the W&B finish is still blocked."""
    release, entered = threading.Event(), threading.Event()

    def hung_finish(run: Any, exit_code: int = 0) -> None:
        entered.set()
        release.wait()

    monkeypatch.setattr(wandb_run, "finish", hung_finish)
    # a finish that ignored its timeout would return only when this watchdog releases it,
    # and then fail the assertions below instead of hanging the test session
    watchdog = threading.Timer(60, release.set)
    watchdog.start()
    cfg = _cfg(tmp_path, "wandb.mode=disabled")
    run = FakeRun(tmp_path / "run" / "wandb" / "offline-run-x")
    t = tracking.TaskTracker(cfg, [0], SlurmEnv.from_environ(), run=run)
    t.update({"progress/items_done": 5, "progress/items_total": 10})
    try:
        t.finish({"rows": 5}, requeued=True, timeout_s=0.5)
        assert not release.is_set()  # returned while the W&B finish was still blocked
        err = capsys.readouterr().err
        assert err.count("asrd: W&B finish did not complete in 0.5 s;") == 1
        assert f"offline files are kept in {run.settings.sync_dir}" in err
        assert entered.wait(60)  # the blocked finish had been called
        assert run.summary == {"rows": 5} and run.preempting and t.run is None
        assert run.logged[-1]["progress/items_done"] == 5
    finally:
        watchdog.cancel()
        release.set()


# --- real W&B, offline ---------------------------------------------------------------------------
def test_offline_task_run_history_and_summary(tmp_path, wb_env):
    cfg = _cfg(tmp_path, "wandb.log_every_s=3", f"slurm.env.WANDB_API_KEY={FAKE_KEY}")
    run_dir = tmp_path / "run"
    t = tracking.TaskTracker.start(cfg, run_dir, [3, 4])
    t.clock = clock = Clock()
    for i in range(10):  # logged at t = 0, 3, 6, 9, and at finish
        t.update({"progress/items_done": 10 * i, "progress/items_total": 100,
                  "progress/audio_s_done": 30.0 * i, "latency/engine_ms_p90": 900,
                  "queue/decode": 2, "failures/decode": i // 5})
        clock.now += 1
    t.finish({"rows": 100, "ok": 99})

    (frag,) = fragments(run_dir / "wandb")
    got = read_run(frag)
    run = got["run"]
    assert run.run_id == tracking.task_run_id(cfg, run_dir, t.env)
    assert run.run_id.startswith("777_3-") and run.resume  # resume intent in the log
    assert (run.run_group, run.job_type, run.display_name) == ("demo", "shard", "demo-shards3-4")
    conf = got["config"]
    assert conf["config_hash"] == config.config_hash(cfg) and conf["shards"] == [3, 4]
    assert conf["slurm"]["array_job_id"] == "777" and conf["slurm"]["array_task_id"] == 3
    assert conf["asrd"]["slurm"]["env"]["WANDB_API_KEY"] == "<redacted>"

    hist = got["history"]
    assert len(hist) == 5
    assert [h["_step"] for h in hist] == sorted({h["_step"] for h in hist})
    assert hist[1]["throughput/items_per_s"] == pytest.approx(10)
    assert hist[1]["throughput/audio_s_per_s"] == pytest.approx(30)
    assert hist[1]["throughput/rtf"] == pytest.approx(1 / 30)
    assert hist[-1]["progress/items_done"] == 90 and hist[-1]["failures/decode"] == 1
    assert hist[-1]["latency/engine_ms_p90"] == 900 and hist[-1]["queue/decode"] == 2
    summary = got["summary"]
    assert summary["rows"] == 100 and summary["slurm/node"]
    assert summary["progress/items_done"] == 90 and got["exit"]
    assert_no_secret(tmp_path)


TASK = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from asrd import config
    from asrd.tracking import TaskTracker
    run_dir, n, end = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cfg = config.load(None, sys.argv[4:])
    t = TaskTracker.start(cfg, run_dir, [3])
    print("MODE", t.run.settings.mode if t.run else "none", flush=True)
    for i in range(1, n + 1):
        t.update({"progress/items_done": 10 * i, "progress/items_total": 100,
                  "progress/audio_s_done": 50.0 * i})
        time.sleep(0.25)
    if end in ("kill", "hang", "term"):  # wait until the service has written history to its log
        log = Path(t.run.settings.sync_file)
        while not (log.exists() and b"progress/items_done" in log.read_bytes()):
            time.sleep(0.05)
    if end == "term":  # SLURM's SIGTERM reaches the W&B service too: it exits
        service = t.service
        os.kill(service, signal.SIGTERM)
        while open(f"/proc/{service}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.05)
    if end == "kill":  # a task killed without warning (OOM, node failure): no finish()
        os.kill(os.getpid(), signal.SIGKILL)
    if end == "hang":  # the W&B service stops answering: stop this process's wandb-core
        me = f"PPid:\\t{os.getpid()}\\n"
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            if text.startswith("Name:\\twandb-core\\n") and me in text:
                (run_dir / "service.pid").write_text(status.parent.name)
                os.kill(int(status.parent.name), signal.SIGSTOP)
    t.finish({"rows": 10 * n}, requeued=end in ("requeue", "term"),
             timeout_s=2 if end == "hang" else 60, exit_code=143 if end == "term" else 0)
""")


def _task(tmp_path: Path, n: int, end: str, *overrides: str, env: dict[str, str] | None = None,
          stderr: int = subprocess.PIPE):
    script = tmp_path / "task.py"
    script.write_text(TASK)
    args = [sys.executable, str(script), str(tmp_path / "run"), str(n), end,
            f"run.dir={tmp_path / 'run'}", "run.name=demo", "wandb.log_every_s=0.2", *overrides]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(args, env=full_env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                          timeout=120)


def test_requeued_task_continues_the_same_run(tmp_path, wb_env):
    """A task killed mid-way and started again by SLURM (same ARRAYJOB_TASK, restart count 1)
    logs to the same run id, with the resume intent and steps that continue."""
    first = _task(tmp_path, 4, "kill", "wandb.mode=offline")
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = _task(tmp_path, 4, "finish", "wandb.mode=offline", env={"SLURM_RESTART_COUNT": "1"})
    assert second.returncode == 0, second.stderr
    assert "upload with: wandb sync" in second.stderr

    frags = fragments(tmp_path / "run" / "wandb")
    assert len(frags) == 2
    a, b = (read_run(f) for f in frags)
    assert a["run"].run_id == b["run"].run_id and a["run"].run_id.startswith("777_3-")
    assert a["run"].resume and b["run"].resume
    assert a["history"] and not a["exit"]  # the killed fragment kept what it logged
    assert b["exit"] and b["summary"]["slurm/restart_count"] == 1
    steps_a = [h["_step"] for h in a["history"]]
    steps_b = [h["_step"] for h in b["history"]]
    assert steps_b[0] > steps_a[-1] and steps_b == sorted(steps_b)
    assert b["history"][-1]["slurm/restart_count"] == 1
    assert_no_secret(tmp_path)


def test_run_ends_cleanly_when_the_signal_ended_the_w_and_b_service(tmp_path, wb_env):
    """scancel and requeue send SIGTERM to every process of the step: the W&B service exits with
    the task's signal. The run is still ended, as preempted with the task's exit code, by a
    fresh service resuming the same run id; no failure and no traceback in the task's log."""
    done = _task(tmp_path, 4, "term", "wandb.mode=offline")
    assert done.returncode == 0, done.stderr
    assert "W&B finish" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "socket.send() raised exception" not in done.stderr
    first, ending = (read_run(f) for f in fragments(tmp_path / "run" / "wandb"))
    assert first["run"].run_id == ending["run"].run_id and ending["run"].resume
    assert first["history"] and not first["exit"]  # what the lost service had written
    assert ending["exit"] and ending["exit_code"] == 143 and ending["preempting"]
    assert ending["summary"]["rows"] == 40 and ending["summary"]["progress/items_done"] == 40
    assert_no_secret(tmp_path)


def test_unreachable_online_w_and_b_falls_back_to_offline(tmp_path, wb_env):
    done = _task(tmp_path, 2, "requeue", "wandb.mode=online",
                 env={"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "3"})
    assert done.returncode == 0, done.stderr
    assert "MODE offline" in done.stdout and "logging offline instead" in done.stderr
    (frag,) = fragments(tmp_path / "run" / "wandb")
    got = read_run(frag)
    assert [h["progress/items_done"] for h in got["history"]][-1] == 20
    assert got["exit"]
    assert_no_secret(tmp_path)


def test_task_exits_when_the_w_and_b_service_hangs(tmp_path, wb_env):
    """With its W&B service stopped, a task still finishes and exits: wandb would wait for the
    service at interpreter exit, so the tracker stops it once the finish timed out."""
    pid_file = tmp_path / "run" / "service.pid"
    try:
        done = _task(tmp_path, 4, "hang", "wandb.mode=offline")
    finally:
        with contextlib.suppress(OSError, ValueError):  # the test's own stopped service
            pid = int(pid_file.read_text())
            if Path(f"/proc/{pid}/status").read_text().startswith("Name:\twandb-core\n"):
                os.kill(pid, signal.SIGKILL)
    assert pid_file.is_file() and done.returncode == 0, done.stderr
    assert done.stderr.count("W&B finish did not complete in 2 s;") == 1
    (frag,) = fragments(tmp_path / "run" / "wandb")
    got = read_run(frag)  # the offline files keep what the service wrote before it stopped
    items = [h["progress/items_done"] for h in got["history"]]
    assert items and items == [10 * (i + 1) for i in range(len(items))] and not got["exit"]
    assert_no_secret(tmp_path)


def test_merge_run_logs_totals_tables_and_audio(tmp_path, wb_env):
    import soundfile as sf

    cfg = _cfg(tmp_path, "wandb.sample_rows=3")
    run_dir = tmp_path / "run"
    flac = tmp_path / "clip.flac"
    sf.write(flac, np.zeros((48000 * 40, 2), dtype=np.float32), 48000)  # 40 s: clipped to 30
    tone = (0.1 * np.sin(np.arange(16000 * 2) / 5)).astype(np.float32)
    samples = [{"id": "a", "text": "hello there", "duration_s": 2.0, "audio": tone},
               {"id": "b", "text": "from a file", "duration_s": 40.0, "path": str(flac)},
               {"id": "c", "text": "unreadable", "duration_s": 1.0, "path": str(tmp_path / "no")},
               {"id": "d", "text": "beyond sample_rows", "duration_s": 1.0, "audio": tone}]
    per_shard = [{"shard": 0, "host": "n1", "rows": 100, "failed": 1, "audio_s": 3600.0,
                  "wall_s": 10.0, "rtf_x": 360.0},
                 {"shard": 1, "host": "n2", "rows": 100, "failed": 0, "audio_s": 3600.0,
                  "wall_s": 40.0, "rtf_x": 90.0}]
    by_clause = {"score >= 3": {"false": 5, "null": 2}, "duration_s < 30": {"false": 1, "null": 0}}
    summary = {"rows": 200, "ok": 199, "failed": 1, "audio_hours": 2.0,
               "filter": list(by_clause), "dropped_by_filter": 7,
               "filter_counts": {"rows": 200, "kept": 193, "dropped": 7,
                                 "dropped_by_clause": by_clause},
               "files": ["part-0.parquet", "part-1.parquet"], "rejected_shards": {},
               "failures_by_reason": {"decode": 1}, "per_shard": per_shard}  # MergeSummary
    tracking.log_merge(cfg, run_dir, summary, per_shard, samples)

    (frag,) = fragments(run_dir / "wandb")
    got = read_run(frag)
    assert got["run"].job_type == "merge" and got["run"].run_group == "demo"
    s = got["summary"]
    assert s["rows"] == 200 and s["audio_hours"] == pytest.approx(2.0) and s["files"] == 2
    assert s["failures/decode"] == 1 and got["exit"]

    # files/media/table: what the run page shows; the staged copies (for `wandb sync`) hold the
    # audio cells, which the preview writes as "Audio"
    logged = {name: json.loads(p.read_text()) for p in frag.parent.glob("files/media/table/*.json")
              for name in ("failures_by_reason", "throughput_per_shard", "throughput_per_host",
                           "samples", "dropped_by_filter_clause") if p.name.startswith(name + "_")}
    assert len(logged) == 5
    assert logged["failures_by_reason"]["data"] == [["decode", 1, 0.005]]
    assert logged["dropped_by_filter_clause"]["data"] == [["score >= 3", 5, 2],
                                                          ["duration_s < 30", 1, 0]]
    assert s["dropped_by_filter"] == 7 and s["filter"] == 2
    shard = logged["throughput_per_shard"]
    col = shard["columns"].index("audio_s_per_s")
    assert [r[col] for r in shard["data"]] == [360.0, 90.0]  # the slow node stands out
    assert logged["throughput_per_host"]["data"][1] == ["n2", 1, 3600.0, 40.0, 90.0]
    assert [r[0] for r in logged["samples"]["data"]] == ["a", "b", "c"]  # sample_rows = 3
    staged = [p for p in (run_dir / "wandb" / "data").rglob("*") if p.is_file()]
    sample_tables = [t for t in (json.loads(p.read_bytes()) for p in staged
                                 if p.read_bytes()[:1] == b"{")
                     if t.get("columns") == ["id", "duration_s", "text", "audio"]]
    assert sample_tables
    cells = [row[3] for row in sample_tables[0]["data"]]
    assert [c and c["_type"] for c in cells] == ["audio-file", "audio-file", None]

    # the audio staged for `wandb sync` lies beside the run, not in the home directory
    wavs = [sf.info(p) for p in staged if p.read_bytes()[:4] == b"RIFF"]
    assert sorted(round(w.duration) for w in wavs) == [2, 30]
    assert not (wb_env / "data").exists() or not any((wb_env / "data").rglob("*.*"))
    assert_no_secret(tmp_path)


def test_disabled_mode_writes_nothing(tmp_path, wb_env):
    cfg = _cfg(tmp_path, "wandb.mode=disabled")
    t = tracking.TaskTracker.start(cfg, tmp_path / "run", [0])
    t.update({"progress/items_done": 1})
    t.finish({})
    tracking.log_merge(cfg, tmp_path / "run", {"rows": 1}, [], [])
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_gpu_metrics_from_nvml(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    block = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # 1 GiB that NVML must see
    for _ in range(20):
        block.add_(1)
    cfg = _cfg(tmp_path, "wandb.mode=disabled", "pipeline.log_every_s=0")
    t = tracking.TaskTracker.start(cfg, tmp_path / "run", [0])
    t.update({"progress/items_done": 1, "progress/items_total": 2})
    m = t.latest_logged
    assert 0 <= m["gpu/0/util_pct"] <= 100
    assert 1 <= m["gpu/0/mem_used_gib"] < m["gpu/0/mem_total_gib"]
    assert f"gpu0 {m['gpu/0/util_pct']:.0f}%" in capsys.readouterr().err
    t.finish()
    del block
