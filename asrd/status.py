"""`asrd status`: which shards are done, failed, running, pending or missing, from one scan of the
markers (plus SLURM's view when the launcher recorded submissions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from asrd.plan import load_plan
from asrd.rundir import RunDir


@dataclass
class RunStatus:
    planned: int
    states: dict[int, str]  # shard -> done | running | pending | failed | missing
    rows_ok: int = 0
    rows_failed: int = 0
    audio_hours_done: float = 0.0
    audio_hours_planned: float = 0.0
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def count(self, state: str) -> int:
        return sum(1 for v in self.states.values() if v == state)


def run_status(run_dir: str, slurm: bool = True) -> RunStatus:
    rd = RunDir(run_dir)
    plan = load_plan(rd)
    markers = rd.markers.read_all()
    states = {s: "missing" for s in range(plan.num_shards)}
    if slurm:
        from asrd.launch.launcher import slurm_states

        states.update({s: v for s, v in slurm_states(rd).items() if s in states})
    st = RunStatus(plan.num_shards, states,
                   audio_hours_planned=sum(s.audio_s for s in plan.shards) / 3600)
    for s, m in markers.items():
        if s in states:
            states[s] = "done"
            st.rows_ok += m["ok"]
            st.rows_failed += m["failed"]
            st.audio_hours_done += m["audio_s"] / 3600
            st.wall_s += m["wall_s"]
            for reason, n in m.get("errors", {}).items():
                st.errors[reason] = st.errors.get(reason, 0) + n
    return st


def format_status(st: RunStatus, per_shard: bool = False) -> str:
    order = ("done", "running", "pending", "failed", "missing")
    lines = [f"shards: {st.planned} planned, " + ", ".join(f"{st.count(k)} {k}" for k in order),
             f"rows: {st.rows_ok} ok, {st.rows_failed} failed",
             f"audio: {st.audio_hours_done:.2f} of {st.audio_hours_planned:.2f} h done"]
    if st.wall_s:
        lines.append(f"throughput: {st.audio_hours_done * 3600 / st.wall_s:.1f} audio s per task-s")
    if st.errors:
        lines.append("failures: " + ", ".join(f"{k}={v}" for k, v in sorted(st.errors.items())))
    if per_shard:
        lines += [f"  shard {s:6d}  {v}" for s, v in sorted(st.states.items())]
    else:
        for k in ("failed", "missing", "running"):
            shards = [s for s, v in st.states.items() if v == k]
            if shards and k != "done":
                lines.append(f"{k}: " + ",".join(map(str, shards[:50])) + (" ..." if len(shards) > 50 else ""))
    return "\n".join(lines)
