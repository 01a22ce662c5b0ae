"""The shared store: any POSIX file system under the run directory, checked before a task writes.

In production every node mounts the same JuiceFS volume; by default the store is a local folder.
Either way the code only sees paths. The one thing a path cannot tell is whether the mount is
really there: with the mount missing (node rebooted, client died), a task would happily create the
run directory on the node's local disk under the empty mount point and "finish" work nobody ever
sees. `check_root` turns that into a clear error at task start.
"""

from __future__ import annotations

import errno
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
JUICEFS_SCRIPT = SCRIPTS_DIR / "juicefs.sh"


class StoreError(RuntimeError):
    """The configured store root is not usable (not mounted, dead, outside the mount, read-only)."""


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str  # e.g. "fuse.juicefs", "ext4", "nfs4"
    source: str


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts(table: str = "/proc/mounts") -> list[Mount]:
    with open(table) as f:
        rows = [line.split() for line in f]
    return [Mount(_unescape(r[1]), r[2], _unescape(r[0])) for r in rows if len(r) >= 3]


def mount_of(path: str | Path) -> Mount:
    """The mount that holds `path` (the longest mount point that is a prefix of it)."""
    real = os.path.realpath(path)
    best = None
    for m in mounts():  # later rows shadow earlier ones at the same point, hence `>=`
        inside = real == m.point or real.startswith(m.point.rstrip("/") + "/")
        if inside and (best is None or len(m.point) >= len(best.point)):
            best = m
    if best is None:  # unreachable on Linux, where "/" is always mounted
        raise StoreError(f"no mount holds {real}")
    return best


def check_root(path: str | Path, require_mount: str | Path | None = None,
               fstype: str | None = None, must_exist: bool = True) -> Mount:
    """Fail clearly unless `path` (the run directory) sits on a live store.

    With `require_mount`, that directory must be a mount point listed in /proc/mounts (of type
    `fstype` when given, e.g. "fuse.juicefs"), answer a statfs (a FUSE mount whose client died
    answers ENOTCONN), and hold `path`. Then `path` must be a writable directory; with
    `must_exist=False` (before `asrd plan` creates it) its nearest existing ancestor must be.
    Returns the mount that holds `path`.
    """
    path = Path(path)
    if require_mount is not None:
        point = os.path.realpath(require_mount)
        _check_mounted(point, fstype)
        real = os.path.realpath(path)
        if real != point and not real.startswith(point.rstrip("/") + "/"):
            raise StoreError(f"{path} is not on the store: it resolves to {real}, which is outside "
                             f"store.require_mount={point}")
    target = path if must_exist else _nearest_existing(path)
    try:
        os.statvfs(target)
    except FileNotFoundError:
        raise StoreError(f"store root {path} does not exist") from None
    except OSError as e:
        raise StoreError(f"store root {target} is not usable: {e.strerror or e}") from None
    if not target.is_dir():
        raise StoreError(f"store root {target} is not a directory")
    if not os.access(target, os.W_OK | os.X_OK):
        raise StoreError(f"store root {target} is not writable by this user")
    return mount_of(target)


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_mounted(point: str, fstype: str | None) -> None:
    how = f"mount it first, e.g. `bash {JUICEFS_SCRIPT} mount --meta URL --mount {point}`"
    found = [m for m in mounts() if m.point == point]
    if not found or not os.path.ismount(point):
        raise StoreError(f"store.require_mount={point} is not mounted ({how}); refusing to write "
                         "into the bare directory under the mount point")
    mount = found[-1]  # the last one mounted at a point is the one in use
    if fstype is not None and mount.fstype != fstype:
        raise StoreError(f"{point} is mounted as {mount.fstype}, expected {fstype}")
    try:
        os.statvfs(point)
    except OSError as e:
        dead = e.errno == errno.ENOTCONN
        raise StoreError(f"store.require_mount={point} ({mount.fstype}) does not answer: "
                         f"{e.strerror or e}" + (f" (its client died; {how})" if dead else "")) from None


def juicefs_setup_line(mount_point: str | Path, meta_url: str | None = None) -> str:
    """The shell line a SLURM task runs first so its node has the volume mounted (a no-op when
    it already is). Without `meta_url`, the job's ASRD_JFS_META environment variable names it."""
    line = f"bash {shlex.quote(str(JUICEFS_SCRIPT))} mount --mount {shlex.quote(str(mount_point))}"
    return line + (f" --meta {shlex.quote(meta_url)}" if meta_url else "")
