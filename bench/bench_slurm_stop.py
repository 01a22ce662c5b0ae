"""How SLURM array tasks stop on SIGTERM (`scancel KEY`, `scontrol requeue KEY`), on the local
one-node cluster with the real pipeline (faster-whisper Whisper-base on CPU) in the tasks.

K one-shard tasks are submitted with `asrd submit`; once a task has committed a part (a condition,
polled), it gets `scancel KEY` or `scontrol requeue KEY` (alternating, `--signals`). Per task:

- stop s: from the signal to the exit of the task's main process (the Python process that srun
  started: submitit's `_submit`, or `asrd run-task`), polled in /proc every 20 ms;
- exit: that process's exit status, seen by `strace -e trace=none` attached to every process of the
  task just before the signal ("143" = clean SIGTERM exit; "KILL" = SIGKILLed after KillWait);
  without strace (--no-strace) srun's "task 0: Exited with exit code N / Killed" log line;
- handler s: signal -> the task's "SIGTERM received" log line (when it logs one);
- step end s: signal -> slurmd's "[JOB.STEP] done with job" (every process of the step gone);
- rows: rows in committed parts at the signal -> after the exit (committed while stopping);
- ray tmp left: the task's Ray temp dir (from its gcs_server's --log_dir) still exists after the
  step ended.

Only the CLI and files are used (submission records are read as plain JSON), so the same bench
runs against any version of the code: the tasks import asrd from the checkout this file is in
(PYTHONPATH, also passed to the tasks through `slurm.env`).

    python bench/bench_slurm_stop.py --tasks 4 --signals scancel,requeue
    python bench/bench_slurm_stop.py --tasks 2 --diagnose /tmp/stop-diag   # ps + py-spy + strace
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "hpc" / "scripts" / "slurm_local.sh"
TASK = ["slurm.mem_gb=1.5", "slurm.cpus_per_task=1", "slurm.time_min=10"]
PLAN = ["engine.cpus_per_engine=0.5", "pipeline.part_rows=1", "engine.batch_size=1",
        "pipeline.items_per_decode_task=1"]
RESULTS = ROOT / "bench" / "RESULTS.md"


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, **kw)


def asrd(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", *args], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"asrd {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def wait_for(pred, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# --- data -------------------------------------------------------------------------------------

def make_index(work: Path, repeat: int) -> Path:
    """The 8-file sample corpus, `repeat` times in a manifest with distinct ids, indexed."""
    index = work / f"index-x{repeat}.parquet"
    if index.exists():
        return index
    corpus = work / "corpus"
    if not (corpus / "manifest.jsonl").exists():
        subprocess.run([sys.executable, "-c",
                        "import sys; from pathlib import Path\n"
                        "try:\n    from asrd.speech_samples import make_corpus\n"
                        "except ImportError:  # the layout before asrd/testing/\n"
                        "    from asrd.samples import make_corpus\n"
                        "make_corpus(Path(sys.argv[1]), n=8)", str(corpus)], check=True)
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    manifest = work / f"manifest-x{repeat}.jsonl"
    with manifest.open("w") as f:
        for r in range(repeat):
            for i, row in enumerate(rows):
                f.write(json.dumps({**row, "id": f"u{i:02d}-r{r:02d}",
                                    "path": str((corpus / row["path"]).resolve())}) + "\n")
    asrd("index", str(manifest), "-o", str(index))
    return index


def committed_rows(run: Path, shard: int) -> int:
    import pyarrow.parquet as pq

    n = 0
    for p in (run / "shards").glob(f"shard-{shard:06d}.parts/part-*.parquet"):
        try:
            n += pq.read_metadata(p).num_rows
        except Exception:  # noqa: BLE001 - a part being renamed into place
            pass
    return n


def shard_done(run: Path, shard: int) -> bool:
    return (run / "shards" / f"shard-{shard:06d}.parquet").exists()


# --- processes of a task ------------------------------------------------------------------------

def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def task_pids(key: str) -> list[int]:
    """Every process whose environment says it belongs to SLURM task `key` ("123_4" or "123")."""
    job, _, idx = key.partition("_")
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        env = _environ(int(d))
        if idx:
            if env.get("SLURM_ARRAY_JOB_ID") == job and env.get("SLURM_ARRAY_TASK_ID") == idx:
                out.append(int(d))
        elif env.get("SLURM_JOB_ID") == job:
            out.append(int(d))
    return sorted(out)


def main_pid(pids: list[int]) -> int | None:
    """The task's Python process that srun (or the batch script) started."""
    for pid in pids:
        cmd = _cmdline(pid)
        if _comm(pid).startswith("python") and ("submitit.core._submit" in cmd
                                                 or "run-task" in cmd):
            return pid
    return None


def ray_tmp_of(pids: list[int]) -> str | None:
    for pid in pids:
        m = re.search(r"(/\S*?/ray-[^/\s]+)/session", _cmdline(pid))
        if m:
            return m.group(1)
    return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def ps_line(pid: int) -> str:
    out = sh("ps", "-o", "pid=,ppid=,pgid=,sid=,stat=,comm=,args=", "-p", str(pid), check=False)
    return out.stdout.rstrip()[:200]


# --- SLURM --------------------------------------------------------------------------------------

def slurm_dir() -> Path:
    return Path(os.environ.get("ASRD_SLURM_DIR", "/tmp/asrd-slurm"))


def kill_wait() -> int | None:
    out = sh("scontrol", "show", "config", check=False).stdout
    m = re.search(r"^KillWait\s*=\s*(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def slurmd_log_times(job_id: str, what: str) -> list[float]:
    """Epoch times of slurmd log lines `[JOB.STEP] ...what...` for job id `job_id`."""
    log = slurm_dir() / "log" / "slurmd.log"
    out = []
    if not log.exists():
        return out
    pat = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] \[" + re.escape(job_id)
                     + r"\.(\w+)\] (.*)$")
    for line in log.read_text(errors="replace").splitlines():
        m = pat.match(line)
        if m and what in m.group(3):
            out.append(dt.datetime.fromisoformat(m.group(1)).timestamp())
    return out


LOG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ WARNING (SIG\w+) received")


def handler_time(err_log: Path, after: float) -> float | None:
    if not err_log.exists():
        return None
    for m in LOG_TIME.finditer(err_log.read_text(errors="replace")):
        t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if t >= after - 0.5:
            return t
    return None


def srun_exit(err_log: Path, since: int) -> str | None:
    """srun's view of the task's end in the log, after byte offset `since`."""
    if not err_log.exists():
        return None
    text = err_log.read_bytes()[since:].decode(errors="replace")
    m = re.search(r"task 0: (Exited with exit code (\d+)|Killed|Terminated)", text)
    if not m:
        return None
    return m.group(2) or ("KILL" if m.group(1) == "Killed" else m.group(1))


# --- one stop -----------------------------------------------------------------------------------

class Stop:
    def __init__(self, key: str, shard: int, how: str, run: Path, args):
        self.key, self.shard, self.how, self.run, self.args = key, shard, how, run, args
        self.result: dict = {"key": key, "shard": shard, "signal": how}
        self.thread: threading.Thread | None = None

    def err_log(self) -> Path:
        return self.run / "logs" / "submitit" / self.key / f"{self.key}_0_log.err"

    def fire(self) -> None:
        pids = task_pids(self.key)
        main = main_pid(pids)
        assert main is not None, f"{self.key}: no main process among {pids}"
        r = self.result
        r["main_pid"] = main
        r["job_id"] = _environ(main).get("SLURM_JOB_ID", "?")
        r["ray_tmp"] = ray_tmp_of(pids)
        r["pids"] = {p: _comm(p) for p in pids}
        self.tids = {int(t): p for p in pids for t in _listdir(f"/proc/{p}/task")}
        err = self.err_log()
        self.err_offset = err.stat().st_size if err.exists() else 0
        diag = self.args.diagnose
        self.strace_out = None
        self.strace = None
        if not self.args.no_strace and shutil.which("strace"):
            self.strace_out = Path(tempfile.mkstemp(prefix=f"strace-{self.key}-",
                                                    dir=diag or None)[1])
            cmd = ["strace", "-f", "-q", "-ttt", "-e", "trace=none", "-o", str(self.strace_out)]
            for p in pids:
                cmd += ["-p", str(p)]
            self.strace = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached
        if diag:
            with open(Path(diag) / f"ps-{self.key}.txt", "w") as f:
                for p in pids:
                    f.write(ps_line(p) + "\n")
        r["rows_at_signal"] = committed_rows(self.run, self.shard)
        cmd = (["scancel", self.key] if self.how == "scancel" else
               ["scancel", "--batch", self.key] if self.how == "scancel-batch" else
               ["scancel", "--signal=USR2", self.key] if self.how == "usr2" else
               ["scontrol", "requeue", self.key])
        self.t0 = time.time()
        sh(*cmd)
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        r, main, diag = self.result, self.result["main_pid"], self.args.diagnose
        dumps = [0.3, 1.0, 2.0, 4.0, 7.0, 9.5] if diag else []
        snaps = open(Path(diag) / f"ps-{self.key}-during.txt", "w") if diag else None
        last_snap = 0.0
        t_exit = None
        while time.time() - self.t0 < 120:
            now = time.time()
            if t_exit is None and not os.path.exists(f"/proc/{main}"):
                t_exit = now
            if diag and dumps and now - self.t0 >= dumps[0] and t_exit is None:
                d = dumps.pop(0)
                out = sh(str(Path(sys.executable).parent / "py-spy"), "dump", "--nonblocking",
                         "--pid", str(main), check=False)
                with open(Path(diag) / f"pyspy-{self.key}-{d:.1f}s.txt", "w") as f:
                    f.write(out.stdout + out.stderr)
            if snaps and now - last_snap >= 0.25:
                last_snap = now
                snaps.write(f"== +{now - self.t0:.2f}s\n")
                for p in r["pids"]:
                    if os.path.exists(f"/proc/{p}"):
                        snaps.write(ps_line(p) + "\n")
            if t_exit is not None and slurmd_log_times(r["job_id"], "done with job"):
                ends = [t for t in slurmd_log_times(r["job_id"], "done with job")
                        if t >= self.t0 - 0.5]
                if len(ends) >= 2 or (ends and now - t_exit > 3):
                    break
            time.sleep(0.02)
        if snaps:
            snaps.close()
        r["stop_s"] = None if t_exit is None else t_exit - self.t0
        ends = [t for t in slurmd_log_times(r["job_id"], "done with job") if t >= self.t0 - 0.5]
        r["step_end_s"] = max(ends) - self.t0 if ends else None
        h = handler_time(self.err_log(), self.t0)
        r["handler_s"] = None if h is None else h - self.t0
        time.sleep(1.0)  # strace writes its last lines
        if self.strace is not None:
            self.strace.terminate()
            self.strace.wait(timeout=10)
            text = self.strace_out.read_text(errors="replace")
            r["exit"] = strace_exit(text, main)
            got = {self.tids[int(t)] for t in re.findall(r"^(\d+)\s+\S+ --- SIGTERM", text, re.M)
                   if int(t) in self.tids}
            r["sigterm_to"] = [f"{r['pids'][p]}:{p}" for p in sorted(got)]
            r["exits"] = {f"{c}:{p}": strace_exit(text, p) for p, c in r["pids"].items()}
            if not diag:
                self.strace_out.unlink()
        else:
            r["exit"] = srun_exit(self.err_log(), self.err_offset)
        r["srun_says"] = srun_exit(self.err_log(), self.err_offset)
        r["rows_after"] = committed_rows(self.run, self.shard)
        r["ray_tmp_left"] = bool(r["ray_tmp"] and os.path.exists(r["ray_tmp"]))
        r["left_alive"] = [r["pids"][p] for p in r["pids"] if os.path.exists(f"/proc/{p}")]


def strace_exit(text: str, pid: int) -> str | None:
    m = re.search(rf"^{pid}\s+\S+ \+\+\+ (exited with (\d+)|killed by (SIG\w+))", text, re.M)
    if not m:
        return None
    return m.group(2) if m.group(2) is not None else m.group(3).replace("SIG", "")


# --- main ---------------------------------------------------------------------------------------

def fmt(v, nd=1) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=4, help="one-shard array tasks (K)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="copies of the 8-file corpus in the index (default: 6 per task)")
    ap.add_argument("--signals", default="scancel,requeue",
                    help="comma list cycled over the tasks: scancel, requeue, scancel-batch "
                    "(`scancel --batch KEY`), usr2 (`scancel --signal=USR2 KEY`: submitit "
                    "requeues the task itself)")
    ap.add_argument("--min-rows", type=int, default=1, help="committed rows before the signal")
    ap.add_argument("--parallelism", type=int, default=2, help="tasks running at once (%%P)")
    ap.add_argument("--work", default="", help="work dir (default: a new temp dir)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra `asrd submit` override (e.g. wandb.mode=offline)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment variable for the tasks (slurm.env)")
    ap.add_argument("--no-strace", action="store_true",
                    help="exit status from srun's log line instead of strace")
    ap.add_argument("--diagnose", default="", help="dir for ps snapshots, py-spy dumps, strace")
    ap.add_argument("--label", default="", help="what code/fix this run measures (for --record)")
    ap.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS}")
    args = ap.parse_args()

    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"]
                                            if os.environ.get("PYTHONPATH") else "")
    os.environ.setdefault("WANDB_MODE", "disabled")
    sh("bash", str(SCRIPT), "start", timeout=900)
    conf = shlex.split(sh("bash", str(SCRIPT), "env").stdout.strip().removeprefix("export "))[0]
    os.environ["SLURM_CONF"] = conf.split("=", 1)[1]
    kw = kill_wait()
    if args.diagnose:
        Path(args.diagnose).mkdir(parents=True, exist_ok=True)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-stop-"))
    work.mkdir(parents=True, exist_ok=True)
    k = args.tasks
    repeat = args.repeat or 6 * k
    index = make_index(work, repeat)
    run = work / f"run-{dt.datetime.now():%H%M%S}"
    asrd("plan", f"run.index={index}", f"run.dir={run}", f"run.num_shards={k}", *PLAN)
    env = [f"slurm.env.PYTHONPATH={ROOT}"] + [f"slurm.env.{e}" for e in args.env]
    asrd("submit", "--array", f"0-{k - 1}%{args.parallelism}", f"run.dir={run}", *TASK, *env,
         *args.set)
    (rec_path,) = sorted((run / "submissions").glob("*.json"))
    record = json.loads(rec_path.read_text())
    keys = [(key, record["tasks"][a["offset"] + i][0])
            for a in record["arrays"] for i, key in enumerate(a["task_keys"])]
    jobs = [a["job_id"] for a in record["arrays"]]
    signals = args.signals.split(",")
    print(f"# {k} tasks {[key for key, _ in keys]}, {repeat * 8 // k} rows per shard, "
          f"KillWait {kw} s, code {ROOT}, run {run}", flush=True)
    stops: list[Stop] = []
    try:
        todo = [Stop(key, shard, signals[i % len(signals)], run, args)
                for i, (key, shard) in enumerate(keys)]
        deadline = time.monotonic() + 300 + 120 * k
        while todo:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out; not stopped: {[s.key for s in todo]}")
            for s in list(todo):
                if shard_done(run, s.shard):
                    raise SystemExit(f"{s.key} finished its shard before it could be stopped: "
                                     "use a larger --repeat")
                if (committed_rows(run, s.shard) >= args.min_rows
                        and main_pid(task_pids(s.key)) is not None):
                    s.fire()
                    todo.remove(s)
                    stops.append(s)
            time.sleep(0.1)
        for s in stops:
            s.thread.join()
            if s.how in ("requeue", "usr2"):  # it would run again: not measured here
                sh("scancel", s.key, check=False)
    finally:
        sh("scancel", *jobs, check=False)

    rows = [s.result for s in stops]
    for r in rows:
        print(f"{r['key']:>8} {r['signal']:<8} stop {fmt(r['stop_s'], 2):>6} s  exit "
              f"{fmt(r['exit']):>4}  handler {fmt(r['handler_s'], 2):>5} s  step end "
              f"{fmt(r['step_end_s'], 2):>6} s  rows {r['rows_at_signal']}->{r['rows_after']}  "
              f"ray tmp left {'yes' if r['ray_tmp_left'] else 'no'}  srun: {r['srun_says']}"
              + (f"  SIGTERM to: {','.join(map(str, r['sigterm_to']))}" if r.get("sigterm_to")
                 else "")
              + (f"  exits: {r['exits']}" if args.diagnose else ""), flush=True)
    times = [r["stop_s"] for r in rows if r["stop_s"] is not None]
    clean = sum(1 for r in rows if r["exit"] == "143")
    killed = sum(1 for r in rows if r["exit"] == "KILL")
    left = sum(1 for r in rows if r["ray_tmp_left"])
    summary = {
        "stop s median": statistics.median(times) if times else None,
        "stop s max": max(times) if times else None,
        "clean exits (143)": f"{clean}/{len(rows)}",
        "SIGKILLed": f"{killed}/{len(rows)}",
        "ray tmp dirs left": f"{left}/{len(rows)}",
        "rows committed while stopping": sum(r["rows_after"] - r["rows_at_signal"] for r in rows),
    }
    print("summary: " + "; ".join(f"{k_}: {fmt(v, 2)}" for k_, v in summary.items()), flush=True)
    if args.record:
        record_results(args, summary, kw, k, repeat * 8 // k)
    return 0


def record_results(args, summary: dict, kw, k: int, rows_per_shard: int) -> None:
    cmd = "python bench/bench_slurm_stop.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]
                                                         if a != "--record")
    machine = f"vm ({platform.machine()}, {os.cpu_count()} cores, local SLURM, KillWait {kw} s)"
    work = (f"{k} tasks x 1 shard of {rows_per_shard} rows, signals {args.signals}"
            + (f"; {args.label}" if args.label else ""))
    day = dt.date.today().isoformat()
    with RESULTS.open("a") as f:
        for name, value in summary.items():
            f.write(f"| slurm/stop | {name} | {fmt(value, 2)} | {work} | {machine} | {day} | "
                    f"`{cmd}` |\n")


if __name__ == "__main__":
    sys.exit(main())
