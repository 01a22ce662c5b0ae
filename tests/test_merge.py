"""Writer + merge without Ray or a model: a shard "worker" that copies index rows into the output
schema, so the exactly-once bookkeeping is tested on its own."""

import json
import shutil
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asrd.cli import main as asrd_main
from asrd.merge import MergeError, merge
from asrd.plan import load_plan, make_plan, read_rows
from asrd.rundir import RunDirError
from asrd.schema import output_schema
from asrd.status import format_status, run_status
from asrd.testing.faults import POINTS
from asrd.runtime.write import ShardIncomplete, ShardWriter
from tests.conftest import make_cfg
from tests.runs import flip_bytes


def copy_worker(rd, plan, shard, skip=(), config_hash=None, dup=False):
    spec = plan.shards[shard]
    w = ShardWriter(rd, spec, output_schema(pq.read_schema(plan.index)), part_rows=2,
                    shard_key=plan.shard_key(shard))
    rows = [r for b in read_rows(plan.index, spec.start, spec.stop) for r in b.to_pylist()]
    for r in rows:
        if r["row"] in skip:
            continue
        err = r["probe_error"]
        w.add({**r, "text": None if err else "copied", "error": err, "model": "copy",
               "engine": "copy"})
    if dup:
        w.add({**rows[0], "text": "again", "error": None, "model": "copy", "engine": "copy"})
    return w.finalize(1.0, config_hash or plan.config_hash, "copy")


def _planned(index, tmp_path):
    cfg = make_cfg(index, tmp_path / "run", "run.num_shards=3", "merge.target_file_mb=0.0001")
    rd, plan = make_plan(cfg)
    return cfg, rd, plan


def merged_clean(cfg, rd, plan):
    """Every shard done and merged: the merged rows in row order, to compare a repair with."""
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    merge(cfg)
    return pq.ParquetDataset(rd.merged_files()).read().sort_by("row")


@pytest.fixture
def planned(corpus_index, tmp_path):
    return _planned(corpus_index, tmp_path)


def test_merge_exactly_once_and_sized_files(planned):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        m = copy_worker(rd, plan, s)
        assert m.rows == plan.shards[s].rows and not rd.parts_dir(s).exists()
    summary = merge(cfg)
    assert summary.rows == plan.index_rows == 8 and summary.shards_merged == 3
    files = rd.merged_files()
    assert len(files) == len(summary.files) > 1  # the tiny target size forced several files
    table = pq.ParquetDataset(files).read()
    assert sorted(table.column("row").to_pylist()) == list(range(8))
    assert len(table.column("id").unique()) == 8
    assert "reference" in table.column_names  # passthrough kept, audio bytes never copied
    saved = json.loads((rd.merged_dir / "summary.json").read_text())
    assert saved["rows"] == 8 and saved["files"] == summary.files
    st = run_status(str(rd.path))
    assert st.count("done") == 3 and st.rows_ok == 8
    assert "3 done" in format_status(st)


def test_missing_shard_refused_unless_allowed(planned):
    cfg, rd, plan = planned
    copy_worker(rd, plan, 0)
    copy_worker(rd, plan, 2)
    with pytest.raises(MergeError, match="1 of 3 shards have no marker: 1"):
        merge(cfg)
    s = merge(cfg, allow_incomplete=True)
    assert s.missing_shards == [1] and s.rows == plan.shards[0].rows + plan.shards[2].rows
    assert run_status(str(rd.path)).states[1] == "missing"


def test_writer_refuses_incomplete_and_duplicate_shards(planned):
    cfg, rd, plan = planned
    with pytest.raises(ShardIncomplete, match="rows missing"):
        copy_worker(rd, plan, 0, skip={plan.shards[0].start})
    assert not rd.markers.is_done(0)
    rd2 = rd.__class__(rd.path)

    shutil.rmtree(rd.parts_dir(1), ignore_errors=True)
    with pytest.raises(ShardIncomplete, match="repeats rows"):
        copy_worker(rd2, plan, 1, dup=True)
    assert not rd.markers.is_done(1)


def test_merge_rejects_other_config_and_tampered_files(planned):
    cfg, rd, plan = planned
    copy_worker(rd, plan, 0, config_hash="0123456789abcdef")
    copy_worker(rd, plan, 1)
    copy_worker(rd, plan, 2)
    with pytest.raises(MergeError, match="shard 0 rejected: config hash 0123456789abcdef"):
        merge(cfg)
    copy_worker(rd, plan, 0)
    with open(rd.shard_file(2), "ab") as f:
        f.write(b"x")
    with pytest.raises(MergeError, match="shard 2 rejected: .* bytes"):
        merge(cfg)


def test_resume_from_committed_parts(planned):
    cfg, rd, plan = planned
    spec = plan.shards[0]
    w = ShardWriter(rd, spec, output_schema(pq.read_schema(plan.index)), part_rows=1,
                    shard_key=plan.shard_key(0))
    first = next(read_rows(plan.index, spec.start, spec.stop)).to_pylist()[0]
    w.add({**first, "text": "t", "error": None, "model": "m", "engine": "e"})
    w2 = ShardWriter(rd, spec, w.schema, part_rows=1, shard_key=plan.shard_key(0))  # restarted
    assert w2.done_rows().tolist() == [spec.start] and w2.next_part == 1


def test_merge_filter_keeps_matching_rows_and_counts_drops_per_clause(planned, capsys):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    durations = pq.read_table(plan.index, columns=["duration_s"]).column(0).to_pylist()
    cut = sorted(durations)[4]
    args = ["merge", f"run.dir={rd.path}", "--filter", f"duration_s < {cut}",
            "--filter", "error IS NULL"]
    assert asrd_main(args) == 0
    summary = json.loads((rd.merged_dir / "summary.json").read_text())
    kept = pq.ParquetDataset(rd.merged_files()).read()
    assert kept.num_rows == summary["kept"] == sum(d < cut for d in durations) == 4
    assert summary["dropped_by_filter"] == 4 and summary["rows"] == 8
    assert summary["filter"] == [f"duration_s < {cut}", "error IS NULL"]
    assert summary["filter_counts"]["dropped_by_clause"] == {
        f"duration_s < {cut}": {"false": 4, "null": 0}, "error IS NULL": {"false": 0, "null": 0}}
    assert f"duration_s < {cut}: failed 4" in capsys.readouterr().out


@pytest.mark.parametrize("clause, message", [
    ("nope >= 3", "no column nope; the columns are"),
    ("(" * 80 + "true" + ")" * 80, "nested more than"),
    ("duration_s > 1e999", "does not fit"),
    ("duration_s > 1" + " AND duration_s > 1" * 200, "characters, more than"),
    ("(SELECT count(*) FROM read_csv('/etc/passwd')) > 0", "subqueries are not allowed"),
    ("reference::INTEGER > 3", "reference"),  # fails only on the data, mid-merge
])
def test_a_bad_filter_is_one_line_and_leaves_the_last_merge_whole(planned, capsys, clause,
                                                                   message):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    merge(cfg)
    before = sorted(p.name for p in rd.merged_dir.iterdir())
    assert asrd_main(["merge", f"run.dir={rd.path}", "--filter", "error IS NULL",
                      "--filter", clause]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asrd: error: bad filter") and message in err and "\n" not in err
    assert sorted(p.name for p in rd.merged_dir.iterdir()) == before  # the last merge stands
    assert [p.name for p in rd.path.iterdir() if "tmp" in p.name] == []  # nothing half-written


def test_flipped_bytes_are_named_by_merge_and_exactly_those_shards_redone(planned, capsys):
    cfg, rd, plan = planned
    clean = merged_clean(cfg, rd, plan)
    flip_bytes(rd.shard_file(0), keep_mtime=True)  # only a full hash can see this one
    flip_bytes(rd.shard_file(2))
    with pytest.raises(MergeError) as e:
        merge(cfg)
    for s in (0, 2):
        assert f"shard {s} rejected: shard-00000{s}.parquet does not match its marker's sha256" \
            in str(e.value)
    assert "shard 1 rejected" not in str(e.value) and "asrd resubmit" in str(e.value)
    # The bad shards are no longer done anywhere: status, resubmit, a task.
    assert rd.markers.done_shards() == {1}
    assert run_status(str(rd.path), slurm=False).states == {0: "missing", 1: "done", 2: "missing"}
    assert json.loads((rd.path / "rejected" / "shard-000000.json").read_text())["reason"] \
        .endswith("(changed or corrupted since it was committed)")
    assert asrd_main(["resubmit", "--dry-run", f"run.dir={rd.path}"]) == 0
    assert "shards without a marker: --array=0,2" in capsys.readouterr().out
    for s in sorted(set(range(plan.num_shards)) - rd.markers.done_shards()):
        copy_worker(rd, plan, s)
    merge(cfg)
    assert pq.ParquetDataset(rd.merged_files()).read().sort_by("row").equals(clean)


def test_status_sees_a_changed_truncated_or_deleted_shard_file(planned):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    flip_bytes(rd.shard_file(0))  # same size, new mtime: status hashes it
    data = rd.shard_file(1).read_bytes()
    rd.shard_file(1).write_bytes(data[: len(data) // 2])
    rd.shard_file(2).unlink()
    st = run_status(str(rd.path), slurm=False)
    assert st.count("done") == 0 and st.count("missing") == 3
    assert "sha256" in st.invalid[0] and "bytes" in st.invalid[1]
    assert st.invalid[2] == "shard-000002.parquet is missing"
    assert "3 markers failed verification" in format_status(st)
    assert rd.markers.done_shards() == set()
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    assert merge(cfg).rows == 8


def test_garbage_marker_is_not_done_and_is_redone(planned):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    rd.markers.path(1).write_bytes(b"{\xff garbage")
    rd.markers.path(2).write_text("[1, 2]")
    st = run_status(str(rd.path), slurm=False)
    assert st.states == {0: "done", 1: "missing", 2: "missing"}
    assert st.invalid[1].startswith("its marker is unreadable: not valid JSON")
    assert st.invalid[2] == "its marker is unreadable: not a JSON object (a list)"
    with pytest.raises(MergeError, match="1 of 3 shards have no marker: 1-2|2 of 3"):
        merge(cfg)
    copy_worker(rd, plan, 1)
    copy_worker(rd, plan, 2)
    assert merge(cfg).rows == 8


@pytest.fixture
def planned_own_index(corpus_index, tmp_path):
    """As `planned`, on a copy of the index that the test may change (the session's is shared)."""
    index = tmp_path / "index.parquet"
    shutil.copyfile(corpus_index, index)
    return _planned(index, tmp_path)


def test_replan_after_the_index_changed_voids_the_old_markers_and_parts(planned_own_index):
    cfg, rd, plan = planned_own_index
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    spec = plan.shards[1]
    stale = ShardWriter(rd, spec, output_schema(pq.read_schema(plan.index)), part_rows=1,
                        shard_key=plan.shard_key(1))
    row = next(read_rows(plan.index, spec.start, spec.stop)).to_pylist()[0]
    rd.markers.invalidate(1, "to leave a part of the old plan behind")
    stale.add({**row, "text": "old", "error": None, "model": "m", "engine": "e"})
    # The index changes in place (one more recording); the run is re-planned with --force.
    table = pq.read_table(plan.index)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1).set_column(
        0, "id", pa.array(["extra"]))]), plan.index)
    with pytest.raises(RunDirError, match=r"changed since this run was planned \(8 rows, now 9\): "
                                          "`asrd plan --force`"):
        merge(cfg)
    assert asrd_main(["plan", "--force", f"run.dir={rd.path}", f"run.index={plan.index}",
                      "run.num_shards=3"]) == 0
    assert rd.markers.done_shards() == set()  # none of them describes the new index
    new = load_plan(rd)
    assert new.index_rows == 9
    w = ShardWriter(rd, new.shards[1], stale.schema, part_rows=1, shard_key=new.shard_key(1))
    assert w.done_rows().size == 0 and not list(rd.parts_dir(1).glob("part-*"))  # discarded
    for s in range(new.num_shards):
        copy_worker(rd, new, s)
    assert merge(cfg).rows == 9


def test_a_part_that_does_not_read_is_discarded_and_its_rows_redone(planned, caplog):
    cfg, rd, plan = planned
    spec = plan.shards[0]
    schema = output_schema(pq.read_schema(plan.index))
    rows = [r for b in read_rows(plan.index, spec.start, spec.stop) for r in b.to_pylist()]
    assert len(rows) >= 2
    w = ShardWriter(rd, spec, schema, part_rows=1, shard_key=plan.shard_key(0))
    for r in rows[:2]:
        w.add({**r, "text": "first try", "error": None, "model": "m", "engine": "e"})
    first, second = sorted(rd.parts_dir(0).glob("part-*.parquet"))
    first.write_bytes(first.read_bytes()[:-9])  # truncated: its footer is gone
    w2 = ShardWriter(rd, spec, schema, part_rows=1, shard_key=plan.shard_key(0))  # the resume
    assert w2.done_rows().tolist() == [rows[1]["row"]]
    assert not first.exists() and "discarding" in caplog.text and first.name in caplog.text
    for r in rows:
        if r["row"] != rows[1]["row"]:
            w2.add({**r, "text": "redone", "error": None, "model": "m", "engine": "e"})
    w2.finalize(1.0, plan.config_hash, "m")
    got = {r["row"]: r["text"] for r in pq.read_table(rd.shard_file(0)).to_pylist()}
    assert sorted(got) == [r["row"] for r in rows] and got[rows[1]["row"]] == "first try"


@pytest.mark.parametrize("point", [p for p in POINTS if p.startswith("merge.")])
def test_a_merge_killed_at_any_point_is_repaired_by_the_next(planned, point):
    cfg, rd, plan = planned
    clean = merged_clean(cfg, rd, plan)
    killed = subprocess.run([sys.executable, "-m", "asrd.cli", "merge", f"run.dir={rd.path}",
                             f"faults.kill_at={point}"], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = sorted(p.name for p in rd.path.iterdir() if p.name.startswith((".merged", "merged")))
    assert left != ["merged"]  # the kill left something to repair
    summary = merge(cfg)
    assert sorted(p.name for p in rd.path.iterdir()
                  if p.name.startswith((".merged", "merged"))) == ["merged"]
    assert pq.ParquetDataset(rd.merged_files()).read().sort_by("row").equals(clean)
    assert json.loads((rd.merged_dir / "summary.json").read_text())["files"] == summary.files


def test_merge_prints_where_the_report_is_and_refuses_an_empty_preset(planned, capsys):
    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    assert asrd_main(["merge", f"run.dir={rd.path}"]) == 0
    report = rd.merged_dir / "report.html"
    assert f"report: {report}\n" in capsys.readouterr().out and report.is_file()
    before = sorted(p.name for p in rd.merged_dir.iterdir())
    assert asrd_main(["merge", f"run.dir={rd.path}", "--preset", ""]) == 2  # not `default`
    err = capsys.readouterr().err
    assert err.startswith("asrd: error: unknown quality preset ''")
    assert sorted(p.name for p in rd.merged_dir.iterdir()) == before


def test_a_filter_whose_cost_is_not_bounded_by_its_row_is_refused(planned):
    """`len(range(0, 1000000000)) > 0` once took 300 s and 20 GB: now one error line, before
    anything is written. The merge runs under an address-space limit, so that a regression
    fails (out of memory, another message) instead of exhausting the machine."""
    import resource

    cfg, rd, plan = planned
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    merge(cfg)
    before = sorted(p.name for p in rd.merged_dir.iterdir())
    limit = 4 << 30

    def bounded():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "asrd.cli", "merge", f"run.dir={rd.path}",
                           "--filter", "len(range(0, 1000000000)) > 0"],
                          capture_output=True, text=True, preexec_fn=bounded, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("asrd: error: bad filter") and proc.stderr.count("\n") == 1
    assert "range() is not a function a filter may use" in proc.stderr
    assert sorted(p.name for p in rd.merged_dir.iterdir()) == before


def test_small_shards_share_row_groups(corpus_index, tmp_path):
    """Eight one-row shards make one row group, not eight: a Parquet writer keeps every row
    group's metadata until its file closes, so one per shard grew merge's memory with the
    number of shards."""
    cfg = make_cfg(corpus_index, tmp_path / "run", "run.num_shards=8")
    rd, plan = make_plan(cfg)
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    assert merge(cfg).shards_merged == 8
    (f,) = rd.merged_files()
    meta = pq.ParquetFile(f).metadata
    assert (meta.num_row_groups, meta.num_rows) == (1, 8)


def test_a_run_dir_reads_its_frozen_config_again_after_a_replan(planned):
    """RunDir loads the frozen config once per version of config.yaml: a re-plan in the same
    process is seen at once, and a caller that edits its copy changes nobody else's."""
    from omegaconf import OmegaConf

    cfg, rd, plan = planned
    mine = rd.frozen_config()
    mine.engine.beam_size = 99
    assert rd.frozen_config().engine.beam_size == cfg.engine.beam_size != 99
    make_plan(OmegaConf.merge(cfg, {"engine": {"beam_size": 7}}), force=True)
    assert rd.frozen_config().engine.beam_size == 7
    assert rd.config(None, ["engine.beam_size=7"]).engine.beam_size == 7  # no drift now
    with pytest.raises(RunDirError, match="config drift"):
        rd.config(None, [f"engine.beam_size={cfg.engine.beam_size}"])


def test_a_shard_file_listed_before_its_marker_is_looked_at_again_not_rejected(planned):
    """Status lists shards/ and done/ at once: a shard committed between the two listings has a
    marker but no file in the listing. It is looked at again (marker, then file), found whole,
    and neither reported nor invalidated; a file that really fails still is."""
    from asrd import verify

    cfg, rd, plan = planned
    before = verify._stats(rd)  # shards/ as listed before the shards were committed
    for s in range(plan.num_shards):
        copy_worker(rd, plan, s)
    rd.shard_file(2).unlink()
    verdicts = verify._judge(rd, plan, rd.done_markers(), before, full=False)
    assert verdicts.done == {0, 1} and verdicts.bad == {2: "shard-000002.parquet is missing"}
    assert rd.markers.done_shards() == {0, 1}
