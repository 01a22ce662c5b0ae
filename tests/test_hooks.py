"""Test hooks stay out of production code: no production module imports `asrd.testing`, no engine
signature carries fault settings, the fault engine is an installed plug-in, and the named points
act only in a process whose environment selects a hook module."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from asrd.engines.registry import engine_class, engine_kinds
from asrd.testing.faults import read_events

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_production_module_imports_the_test_package():
    production = [p for p in (REPO / "asrd").rglob("*.py")
                  if (REPO / "asrd" / "testing") not in p.parents]
    production += list((REPO / "hpc").rglob("*.py"))
    offenders = {str(p.relative_to(REPO)): sorted(i for i in _imports(p)
                                                  if i.startswith("asrd.testing"))
                 for p in production}
    assert len(production) > 50
    assert {k: v for k, v in offenders.items() if v} == {}


def test_engine_signatures_carry_no_fault_settings():
    for kind in ("faster_whisper", "transformers", "vllm", "fault"):
        cls = engine_class(kind)
        for method in ("from_config", "check", "packs"):
            params = inspect.signature(getattr(cls, method)).parameters
            assert "faults" not in params, (kind, method, list(params))


def test_the_fault_engine_is_an_installed_plug_in():
    assert "fault" in {ep.name for ep in entry_points(group="asrd.engines")}
    assert "fault" in engine_kinds()
    assert engine_class("fault").__module__ == "asrd.testing.faults"


def _run_plan_point(tmp_path: Path, hooks: str | None) -> list[dict]:
    """`asrd plan` in a fresh process told to hold at `plan.locked` (released at once): the hook
    records the hold in state_dir when, and only when, the environment selects it."""
    state = tmp_path / f"state-{hooks}"
    release = tmp_path / "release"
    release.touch()
    env = {k: v for k, v in os.environ.items() if k != "ASRD_HOOKS"}
    if hooks:
        env["ASRD_HOOKS"] = hooks
    code = ("import sys; from asrd import config, hooks; "
            f"config.load(None, ['run.index=x', 'faults.hold_at=plan.locked', "
            f"'faults.state_dir={state}', 'faults.release_file={release}']); "
            "hooks.at('plan.locked', shard=3)")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO, timeout=120)
    return read_events(state, "points")


def test_named_points_act_only_where_the_environment_selects_a_hook_module(tmp_path):
    assert _run_plan_point(tmp_path, None) == []
    (event,) = _run_plan_point(tmp_path, "asrd.testing.faults")
    assert event["point"] == "plan.locked" and event["outcome"] == "hold" and event["shard"] == 3
