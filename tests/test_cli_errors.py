"""Bad input and a hostile machine end in one line, `asrd: error: ...`, exit status 2, and nothing
half-written. Cases about the process itself (an engine dying at start, a full or read-only store,
a closed pipe, what `asrd status` imports) run the real command line as a process and read its
stderr; the plain refusals of bad input call `asrd.cli.main`, what the `asrd` script runs, in the
test process (an interpreter's start and imports were most of their time)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.runs import assert_exactly_once, cli_args


def asrd(*args: str) -> subprocess.CompletedProcess:
    """`asrd ARGS` as a process of its own."""
    return subprocess.run([sys.executable, "-m", "asrd.cli", *args], capture_output=True,
                          text=True)


@pytest.fixture
def asrd_here(capsys) -> Callable[..., subprocess.CompletedProcess]:
    """`asrd ARGS` through `asrd.cli.main` in this process, its exit status (argparse's
    SystemExit too) and what it printed in the shape of a finished process."""
    from asrd.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # only this command's output
        try:
            status = main(list(args))
        except SystemExit as e:
            status = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["asrd", *args], status, out, err)

    return run


def assert_one_error_line(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit 2; the driver's stderr ends with its only `asrd: error:` line, and holds no
    traceback (lines that Ray relays from an actor's own log carry the actor's prefix)."""
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    own = [x for x in lines if not x.lstrip("\x1b[0-9;m").startswith("(")]
    errors = [x for x in lines if x.startswith("asrd: error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    assert not any("Traceback" in x for x in own), proc.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of an interrupted commit (hpc.commit names them `.NAME.tmp-*`)."""
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


# --- config files ------------------------------------------------------------------------------

CONFIG_FILES = {
    "a list": (b"- run\n- engine\n", "must be a mapping of sections"),
    "a single value": (b"42\n", "must be a mapping of sections"),
    "a YAML syntax error": (b"run: {name: [\n", "is not valid YAML at line 2"),
    "not UTF-8": (b"run:\n  name: caf\xe9\n", "is not UTF-8 text"),
    "an unresolvable variable": (b"run:\n  name: ${oc.env:ASRD_TEST_NEVER_SET}\n",
                                 "cannot resolve config key 'run.name'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_bad_config_file(case, tmp_path, asrd_here):
    content, expected = CONFIG_FILES[case]
    f = tmp_path / "bad.yaml"
    f.write_bytes(content)
    run_dir = tmp_path / "run"
    assert_one_error_line(asrd_here("plan", "-c", str(f), f"run.dir={run_dir}",
                                    "run.index=/x.parquet"), expected)
    assert not run_dir.exists()


# --- indexes made by hand -----------------------------------------------------------------------

def _bad_index(kind: str, good: Path, out: Path) -> Path:
    t = pq.read_table(good)
    if kind == "not Parquet":
        out.write_text("id,path\na,a.wav\n")
    elif kind == "no id":
        pq.write_table(t.drop(["id"]), out)
    elif kind == "no duration_s":
        pq.write_table(t.drop(["duration_s"]), out)
    elif kind == "null ids":
        ids = [None] + t.column("id").to_pylist()[1:]
        pq.write_table(t.set_column(0, "id", pa.array(ids, pa.string())), out,
                       write_statistics=False)  # counted from the data, not the footer
    elif kind == "text durations":
        k = t.schema.get_field_index("duration_s")
        pq.write_table(t.set_column(k, "duration_s", t.column(k).cast(pa.string())), out)
    return out


BAD_INDEXES = {"not Parquet": "is not a readable Parquet file", "no id": "has no 'id' column",
               "no duration_s": "has no 'duration_s' column", "null ids": "1 rows have no id",
               "text durations": "'duration_s' must hold numbers"}


@pytest.mark.parametrize("kind", sorted(BAD_INDEXES))
def test_bad_index_is_refused_at_plan(kind, corpus_index, tmp_path, asrd_here):
    index = _bad_index(kind, corpus_index, tmp_path / "index.parquet")
    run_dir = tmp_path / "run"
    assert_one_error_line(asrd_here("plan", f"run.index={index}", f"run.dir={run_dir}"),
                          str(index), BAD_INDEXES[kind])
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "plan.json").exists()


MANIFESTS = {"an unclosed quote": ("m.csv", b'path,reference\n"a.wav,x\n', "not CSV"),
             "not UTF-8": ("m.jsonl", b'{"path": "caf\xe9.wav"}\n', "not UTF-8 text"),
             "a JSON list": ("m.jsonl", b'["a.wav"]\n', "not a JSON object"),
             "an empty id": ("m.jsonl", b'{"path": "a.wav", "id": ""}\n', "empty id")}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifest_is_refused_at_index(case, tmp_path, asrd_here):
    name, content, expected = MANIFESTS[case]
    (tmp_path / name).write_bytes(content)
    assert_one_error_line(asrd_here("index", str(tmp_path / name), "-o",
                                    str(tmp_path / "i.parquet")), expected)
    assert not (tmp_path / "i.parquet").exists() and not _leftovers(tmp_path)


def test_index_output_that_is_a_folder(corpus, tmp_path, asrd_here):
    assert_one_error_line(asrd_here("index", str(corpus), "-o", str(tmp_path)), "is a folder")


# --- engines that cannot load -------------------------------------------------------------------

def test_missing_model_is_refused_before_the_config_is_frozen(corpus_index, tmp_path, asrd_here):
    run_dir = tmp_path / "run"
    for command in ("plan", "run"):
        assert_one_error_line(asrd_here(command, f"run.index={corpus_index}", f"run.dir={run_dir}",
                                        f"engine.model={tmp_path / 'no-model'}"),
                              "not a CTranslate2 model directory")
        assert not (run_dir / "config.yaml").exists()


def test_engine_that_dies_at_start_reports_its_own_error(corpus_index, tmp_path):
    """A model directory that passes the cheap check but does not load: the engine actor's
    constructor raises, and the user reads that error, not Ray's ActorDiedError."""
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "model.bin").write_bytes(b"not a CTranslate2 model")
    (model / "config.json").write_text("{}")
    proc = asrd("run", f"run.index={corpus_index}", f"run.dir={tmp_path / 'run'}",
                "run.num_shards=1", f"engine.model={model}")
    line = assert_one_error_line(proc, "the faster_whisper engine could not start: RuntimeError:")
    assert "ActorDiedError" not in line
    assert not (tmp_path / "run" / "done").exists() or not any((tmp_path / "run" / "done").iterdir())


# --- a full or read-only store ------------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(point: Path, size: str = "512k") -> Iterator[Path]:
    """A real file system of `size` bytes (mounting needs root: skipped elsewhere)."""
    point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def fill(folder: Path) -> Path:
    """Write zeros until the file system says ENOSPC; returns the filler (delete it to free)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_and_read_only_store_during_run_and_merge(corpus_index, tmp_path, asrd_here):
    """The run on a full store is a process of its own: it fails after its Ray session and
    pipeline started, and ending with the process, they relay no actor's line after its error
    line. The plan, the resume, the merges and the refused restart run in this process."""
    rows = pq.read_metadata(corpus_index).num_rows
    with small_tmpfs(tmp_path / "store") as store:
        run_dir = store / "run"
        args = cli_args(corpus_index, run_dir, "engine.kind=fault")
        assert asrd_here("plan", *args[4:]).returncode == 0
        filler = fill(store)
        assert_one_error_line(subprocess.run(args, capture_output=True, text=True),
                              "No space left on device", "free space there")
        assert not (run_dir / "done" / "shard-000000.json").exists() and not _leftovers(run_dir)
        filler.unlink()
        assert asrd_here(*args[3:]).returncode == 0  # nothing was lost
        assert_exactly_once(run_dir, rows)

        merge = [f"run.dir={run_dir}"]
        assert asrd_here("merge", *merge).returncode == 0
        before = {p.name: p.read_bytes() for p in (run_dir / "merged").iterdir()}
        filler = fill(store)
        assert_one_error_line(asrd_here("merge", *merge), "No space left on device")
        assert {p.name: p.read_bytes() for p in (run_dir / "merged").iterdir()} == before
        assert not _leftovers(run_dir)
        filler.unlink()

        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        assert_one_error_line(asrd_here("merge", *merge), "Read-only file system")
        assert_one_error_line(asrd_here(*args[3:], "--force"), "not writable")
        assert json.loads((run_dir / "merged" / "summary.json").read_text())["rows"] == rows


def test_output_into_a_pipe_whose_reader_is_gone_ends_quietly(corpus_index, tmp_path, asrd_here):
    """`asrd status | head -1`: once the reader has gone, asrd ends as Unix tools do, without
    an error line or a traceback (status 128 + SIGPIPE)."""
    run_dir = tmp_path / "run"
    assert asrd_here("plan", f"run.index={corpus_index}", f"run.dir={run_dir}",
                     "engine.kind=fault").returncode == 0
    status = [sys.executable, "-m", "asrd.cli", "status", f"run.dir={run_dir}"]
    first = subprocess.run(status, capture_output=True, text=True, check=True).stdout
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before asrd writes a byte: every write fails
    try:
        proc = subprocess.run(status, stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert "error" not in proc.stderr.lower() and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 128 + signal.SIGPIPE
    piped = subprocess.run(f"{shlex.join(status)} | head -1", shell=True, capture_output=True,
                           text=True, executable="/bin/bash")
    assert piped.stdout == first.splitlines(keepends=True)[0]
    assert "error" not in piped.stderr.lower(), piped.stderr


# --- error types named, not imported -------------------------------------------------------------

def test_every_user_error_name_is_the_exception_class_it_matches():
    """The command line names its user errors (module.Class) instead of importing them: a class
    renamed or moved would silently become a traceback, so each name must still import as an
    exception class whose own module and name are that name."""
    import importlib

    from asrd.cli import USER_ERRORS, is_user_error

    for name in USER_ERRORS:
        module, _, cls_name = name.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        assert issubclass(cls, Exception) and f"{cls.__module__}.{cls.__qualname__}" == name
        assert is_user_error(type("Sub", (cls,), {})("x"))  # a subclass counts too
    assert not is_user_error(ValueError("x")) and not is_user_error(BrokenPipeError())


def test_status_imports_only_what_it_runs_and_lazy_errors_stay_one_line(corpus_index, tmp_path,
                                                                        asrd_here):
    """`asrd status` does not import the merge, export, report or runtime modules (a tenth of a
    second, seconds on a loaded node); errors raised by modules a command imports on its own are
    still one `asrd: error:` line, exit status 2."""
    run_dir = tmp_path / "run"
    assert asrd_here("plan", f"run.index={corpus_index}", f"run.dir={run_dir}",
                     "engine.kind=fault").returncode == 0
    probe = ("import sys; from asrd.cli import main; rc = main(sys.argv[1:]); "
             "print('MODULES', *sorted(m for m in sys.modules if m.startswith('asrd.'))); "
             "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", probe, "status", f"run.dir={run_dir}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(proc.stdout.split("MODULES", 1)[1].split())
    assert "asrd.status" in loaded
    assert not loaded & {"asrd.merge", "asrd.export", "asrd.report", "asrd.filters",
                         "asrd.demo", "asrd.runtime.write"}, sorted(loaded)
    assert_one_error_line(asrd("status", f"run.dir={tmp_path / 'never'}"),
                          "not a planned run directory")  # RunDirError
    assert_one_error_line(asrd("report", f"run.dir={run_dir}"), "run `asrd merge` first")
    assert_one_error_line(asrd("export", f"run.dir={run_dir}", "-o", str(tmp_path / "out")),
                          "holds no merged files")  # ExportError, a ValueError subclass
