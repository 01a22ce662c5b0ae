"""Real JuiceFS volumes for tests, made and torn down with the project's own scripts.

`jfs_volume` (session): one volume with SQLite metadata and local object storage, formatted and
mounted once per test session by hpc/scripts/juicefs.sh. Test modules import the fixture; since
pytest then registers one definition per module, the volume itself is a refcounted singleton here,
so the whole session still mounts it once and unmounts it after the last user (an atexit hook is
the last resort when pytest is interrupted).

`redis_volume` (module): a private redis-server on a free loopback port (hpc/scripts/redis_local.sh)
as the metadata engine, and the volume mounted twice, as two nodes would mount it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUICEFS_SH = ROOT / "hpc" / "scripts" / "juicefs.sh"
REDIS_SH = ROOT / "hpc" / "scripts" / "redis_local.sh"


def sh(script: Path, *args: str, check: bool = True, env: dict | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess:
    res = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})})
    if check and res.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({res.returncode}):\n"
                           f"{res.stdout}\n{res.stderr}")
    return res


@dataclass
class Volume:
    """A formatted JuiceFS volume and the mount points this session made for it."""
    home: Path
    meta: str
    name: str
    mounts: list[Path] = field(default_factory=list)

    def format(self) -> None:
        sh(JUICEFS_SH, "format", "--meta", self.meta, "--bucket", str(self.home / "bucket"),
           "--name", self.name)

    def mount(self, point: Path, *juicefs_opts: str) -> Path:
        self.mounts.append(point)
        sh(JUICEFS_SH, "mount", "--meta", self.meta, "--mount", str(point),
           "--log", str(self.home / f"{point.name}.log"),
           "--cache-dir", str(self.home / f"{point.name}-blockcache"), "--", *juicefs_opts)
        return point

    def umount(self, point: Path) -> None:
        sh(JUICEFS_SH, "umount", "--mount", str(point), "--force")

    def umount_all(self) -> None:
        errors = []
        for point in reversed(self.mounts):
            try:
                self.umount(point)
            except Exception as e:  # keep going: every mount must come down
                errors.append(str(e))
        self.mounts.clear()
        if errors:
            raise RuntimeError("unmount failed:\n" + "\n".join(errors))

    @property
    def root(self) -> Path:
        return self.mounts[0]


def client_pids(vol: Volume, point: Path) -> list[int]:
    """The juicefs client serving `point` and its supervisor, from the volume's session list (the
    client rewrites and truncates its command line, so /proc cmdlines cannot tell); used to kill a
    client on purpose, as a node crash would."""
    status = subprocess.run([str(ROOT / ".venv" / "bin" / "juicefs"), "status", vol.meta],
                            capture_output=True, text=True, check=True, timeout=60)
    pids = [s["ProcessID"] for s in json.loads(status.stdout)["Sessions"]
            if s["MountPoint"] == str(point)]
    for pid in list(pids):  # the supervisor restarts a client that dies: take it too
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if Path(f"/proc/{ppid}/exe").resolve().name == "juicefs":
            pids.insert(0, ppid)
    return pids


_session: dict = {"volume": None, "refs": 0}


def _teardown_session_volume() -> None:
    vol = _session["volume"]
    _session["volume"] = None
    if vol is not None:
        vol.umount_all()


atexit.register(_teardown_session_volume)


@pytest.fixture(scope="session")
def jfs_volume(tmp_path_factory) -> Iterator[Volume]:
    if _session["volume"] is None:
        home = tmp_path_factory.mktemp("juicefs")
        vol = Volume(home, f"sqlite3://{home}/meta.db", f"asrd-test-{uuid.uuid4().hex[:8]}")
        vol.format()
        _session["volume"] = vol
        try:
            vol.mount(home / "mnt")
        except Exception:
            _teardown_session_volume()
            raise
    _session["refs"] += 1
    try:
        yield _session["volume"]
    finally:
        _session["refs"] -= 1
        if _session["refs"] == 0:
            _teardown_session_volume()


@pytest.fixture
def jfs_dir(jfs_volume, request) -> Iterator[Path]:
    """A fresh folder on the session's JuiceFS mount, removed after the test."""
    d = jfs_volume.root / f"{request.node.name[:60]}-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_volume(tmp_path_factory) -> Iterator[Volume]:
    """A Redis-backed volume mounted at two points (two clients, as on two nodes). The short
    heartbeat makes a dead client's session (and its locks) expire in seconds, not a minute."""
    home = tmp_path_factory.mktemp("juicefs-redis")
    url = sh(REDIS_SH, "start", str(home / "redis")).stdout.strip()
    vol = Volume(home, f"{url}/1", f"asrd-redis-{uuid.uuid4().hex[:8]}")
    try:
        vol.format()
        vol.mount(home / "node-a", "--heartbeat", "1s")
        vol.mount(home / "node-b", "--heartbeat", "1s")
        yield vol
    finally:
        try:
            vol.umount_all()
        finally:
            sh(REDIS_SH, "stop", str(home / "redis"))
