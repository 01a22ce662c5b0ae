"""One stop path for a task process, whatever started it (a shell, submitit, an sbatch script).

Signals a task gets:
- SIGTERM: scancel, `scontrol requeue`, preemption on clusters that send only SIGTERM, the time
  limit itself. Stop and keep the finished work; SLURM requeues the task itself when that was a
  requeue or a requeueing preemption, and a cancelled task is left for a resubmission.
- SIGUSR2: submitit's `--signal=USR2@delay`, sent before the time limit (or on preemption where
  the cluster is configured so): stop, keep the finished work, then requeue the task.
- SIGINT (Ctrl-C): stop and keep the finished work.
The first one becomes SystemExit(128 + signal) wherever the process is, so `finally` blocks
commit what is finished; later ones (a requeue's own SIGTERM, a second Ctrl-C) are ignored so
that they cannot interrupt that. The handlers go in before anything else starts (Ray, W&B), and
`graceful_stop()` reuses the one an outer entry point installed, so there is one per process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from types import FrameType
from typing import Any, Callable, ClassVar, Iterator, Sequence

log = logging.getLogger("hpc.stop")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)
REQUEUE_SIGNAL = signal.SIGUSR2


class GracefulStop:
    """Turns the first stop signal into SystemExit(128 + signum); ignores the ones after it."""

    active: ClassVar[GracefulStop | None] = None

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.outer: GracefulStop | None = None

    def __enter__(self) -> GracefulStop:
        for sig in self.signals:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        self.outer, GracefulStop.active = GracefulStop.active, self
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        GracefulStop.active = self.outer

    def _handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        name = signal.Signals(signum).name
        if self.signum is not None:
            log.warning("%s ignored: already stopping on %s", name,
                        signal.Signals(self.signum).name)
            return
        self.signum = signum
        log.warning("%s received: stopping; finished work is kept", name)
        raise SystemExit(128 + signum)

    @property
    def stopping(self) -> bool:
        return self.signum is not None

    @property
    def wants_requeue(self) -> bool:
        return self.signum == REQUEUE_SIGNAL

    def reraise(self) -> None:
        """Re-raise the SystemExit being handled, as 128 + signal when a signal caused it (a
        SystemExit raised inside a C extension's wait, Ray's for one, can come out as 1)."""
        if self.signum is None:
            raise  # noqa: PLE0704 - only called from an except block
        raise SystemExit(128 + self.signum) from None


@contextlib.contextmanager
def graceful_stop() -> Iterator[GracefulStop]:
    """The process's stop handler: the one an outer entry point installed, else a new one."""
    if GracefulStop.active is not None:
        yield GracefulStop.active
        return
    with GracefulStop() as stop:
        yield stop


def run_until_stopped(fn: Callable[..., Any], *args: Any,
                      on_requeue: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` under the stop handler; on SIGUSR2, once `fn` has kept its finished
    work, `on_requeue()` requeues the task; the process then exits with 128 + signal."""
    with graceful_stop() as stop:
        try:
            return fn(*args, **kwargs)
        except SystemExit:
            if stop.wants_requeue and on_requeue is not None:
                on_requeue()
            stop.reraise()


@contextlib.contextmanager
def shielded_children(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Processes started inside (Ray's, W&B's service) get the stop signals blocked: a blocked
    mask survives fork and exec. SLURM signals every process of a job step at once; so shielded,
    only the task acts on it, and it ends its helpers when it has kept its finished work. Here
    the signals only wait: one that arrives meanwhile is handled as the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
