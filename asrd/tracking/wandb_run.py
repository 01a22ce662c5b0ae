"""The W&B run lifecycle: ids, config without secrets, init with an offline fallback, announce,
and a finish that never holds the process.

Why: tracking must never cost the job. An unreachable W&B server falls back to offline logging;
a failing W&B call is reported once and then ignored; and finishing gives up after a timeout,
because when SLURM signals every process of a job step the W&B service may be dead or hung, and
the task must still exit (its offline files stay for `wandb sync`).

Stopped tasks. scancel and `scontrol requeue` send SIGTERM to every process of the step, W&B's
service (`wandb-core`, a Go program: it unblocks the signal whatever mask it inherits) among them,
so it is gone by the time the task closes its run. The task then ends the run through a fresh
service: the same id resumed (a new offline fragment, or the same online run) holds the final
summary, the preempting mark and the exit record with the task's exit code (143). A requeued
task continues that run again.

Runs. group = `run.name`; job_type = "shard" (a task) or "merge". Run config: the frozen config
(secret-looking values redacted), its hash, the task's shards and SLURM ids. A task's run id is
`<ARRAYJOB_TASK>-<digest of run name, config hash and run dir>`, with `resume="allow"`: a requeued
task continues the same run; another run dir, config or array job never appends to an old run.
W&B files go to `<wandb.dir or RUN_DIR>/wandb/`.

Requeue and offline mode. Each (re)start of an offline task writes its own fragment
`offline-run-<time>-<id>` with the same id and, in its `.wandb` log, the resume intent;
`wandb sync RUN_DIR/wandb` syncs the fragments of one id one after another in start-time order,
resuming the run (steps: see `steps`). Config and history are in the `.wandb` log from the start
and flushed every `wandb.log_every_s` (at least 1 s), so a task killed without warning loses at
most that much.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from asrd.config import config_hash
from asrd.tracking.console import say
from hpc.slurm_env import SlurmEnv

FINISH_TIMEOUT_S = 10.0  # how long a task waits for W&B to finish its run
REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"api_?key|secret|passw|credential|private_?key|(^|_)token$",
                         re.IGNORECASE)


# --- what identifies a run -----------------------------------------------------------------------
def wandb_root(cfg: DictConfig, run_dir: Path) -> Path:
    """The `dir` handed to wandb.init; W&B writes below `<root>/wandb/`."""
    return Path(cfg.wandb.dir) if cfg.wandb.dir else Path(run_dir)


def task_run_id(cfg: DictConfig, run_dir: Path, env: SlurmEnv) -> str:
    """Stable across requeues of one task (same ARRAYJOB_TASK), new for any other run."""
    seed = f"{cfg.run.name}\0{config_hash(cfg)}\0{Path(run_dir).resolve()}"
    return f"{env.task_key}-{hashlib.sha256(seed.encode()).hexdigest()[:10]}"


def shard_label(shards: list[int]) -> str:
    """`shard3`, `shards3-9` or `no-shards`: short enough for run names and log prefixes."""
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


# --- starting and finishing ----------------------------------------------------------------------
def _drop_inherited_service() -> None:
    """Use a W&B service of our own, not one a parent process started (WANDB_SERVICE is
    "<version>-<pid>-..."): in a shared service, a killed task's stream keeps holding its run id,
    and its requeued successor is refused with "run ID ... is in use"."""
    parts = os.environ.get("WANDB_SERVICE", "").split("-")
    if len(parts) > 1 and parts[1] != str(os.getpid()):
        del os.environ["WANDB_SERVICE"]


def init(cfg: DictConfig, root: Path, **kwargs: Any) -> Any:
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
        say(f"W&B online init failed ({type(e).__name__}: {e}); logging offline instead")
        wandb.teardown()  # the failed stream keeps holding the run id in this service
        return wandb.init(mode="offline", **common)


def announce(run: Any) -> None:
    """Say on stderr where the run is: its URL, or its offline files and how to upload them."""
    where = Path(run.settings.sync_dir)
    if run.settings.mode == "offline":
        say(f"W&B run {run.id} (offline) in {where}; upload with: wandb sync {where.parent}")
    else:
        say(f"W&B run {run.id}: {run.url}")


def finish(run: Any, exit_code: int = 0) -> None:
    """Finish and stop this process's W&B service: run.finish() can return before the `.wandb`
    log is fully written; the teardown waits for it, so the files are complete on return."""
    import wandb

    run.finish(exit_code=exit_code)
    wandb.teardown()


def close(run: Any, summary: Mapping[str, Any] | None, requeued: bool,
          timeout_s: float = FINISH_TIMEOUT_S, exit_code: int = 0,
          service: int | None = None, reopen: Callable[[], Any] | None = None) -> None:
    """Write the final summary, mark a requeued (or otherwise stopped) run preempting and
    `finish` it with `exit_code`, waiting at most `timeout_s`: past that, say so once, stop the
    W&B service and return. Where the run's service (pid `service`) has exited (SLURM's signal
    ended it), the run is ended through a fresh one: `reopen()` resumes the same run id."""
    failed: list[Exception] = []

    def end(target: Any) -> None:
        target.summary.update(dict(summary or {}))
        if requeued:
            target.mark_preempting()
        finish(target, exit_code)

    def work() -> None:
        try:
            if reopen is not None and service is not None and service_exited(service):
                _drop_lost_service()
                end(reopen())
            else:
                end(run)
        except Exception as e:  # noqa: BLE001 - reported by the caller's thread
            failed.append(e)

    where = Path(run.settings.sync_dir)
    thread = threading.Thread(target=work, name="asrd-wandb-finish", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        say(f"W&B finish did not complete in {timeout_s:g} s; stopping the W&B service and "
            f"going on: the run's offline files are kept in {where} "
            f"(upload with: wandb sync {where.parent})")
        _kill_service()
    elif failed:
        say(f"W&B finish failed ({type(failed[0]).__name__}: {failed[0]})")


def _service_children() -> list[tuple[int, str]]:
    """(pid, state letter) of this process's own W&B services (`wandb-core` children)."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
            if name == "wandb-core" and fields.split()[1] == me:
                found.append((int(stat.parent.name), fields.split()[0]))
    return found


def service_pid() -> int | None:
    """This process's running W&B service, if it has one."""
    return next((pid for pid, state in _service_children() if state != "Z"), None)


def service_exited(pid: int) -> bool:
    """Whether the W&B service `pid` has exited (gone, or a zombie not yet reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return "(wandb-core)" not in text or text[text.rindex(")") + 2:].split()[0] == "Z"


def _drop_lost_service() -> None:
    """Forget the exited service, so that the next wandb.init starts another. wandb's teardown
    still tries to reach it: its one failure is expected, and asyncio's warnings about writes to
    the closed socket say nothing new."""
    import wandb

    quiet = logging.getLogger("asyncio")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with contextlib.suppress(Exception):
            wandb.teardown()
    finally:
        quiet.setLevel(level)


def _kill_service() -> None:
    """SIGKILL this process's own W&B service (its `wandb-core` children): wandb waits for that
    process at interpreter exit without a timeout, so a hung one would still hold the task."""
    for pid, _ in _service_children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
