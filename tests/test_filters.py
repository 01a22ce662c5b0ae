"""The merge filter: SQL WHERE clauses on pyarrow data through sandboxed DuckDB, drop counts per
clause, clear errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from asrd.filters import MAX_CLAUSE_CHARS, FilterCounts, FilterError, RowFilter


@pytest.fixture
def table() -> pa.Table:
    return pa.table({
        "id": ["a", "b", "c", "d", "e"],
        "score": [1.0, None, 4.0, 5.0, 3.0],
        "duration_s": [10.0, 20.0, 40.0, 5.0, 29.9],
        "language": ["en", "de", None, "en", "fr"],
        "error": [None, "decode failed", None, None, None],
        "rows": pa.array([1, 2, 3, 4, 5], pa.int32()),
        "ok": [True, False, True, True, True],
        "odd name": [1, 1, 0, 0, 1],
        "segments": pa.array([[{"start": 0.0, "text": "hi"}], [], None, [], []],
                             pa.list_(pa.struct([("start", pa.float64()), ("text", pa.string())]))),
    })


def kept_ids(clauses: list[str], data) -> list[str]:
    kept, _ = RowFilter(clauses).apply(data)
    return kept.column("id").to_pylist()


@pytest.mark.parametrize("clauses, ids", [
    (["score >= 3"], ["c", "d", "e"]),  # the null score (an unscored row) is dropped
    (["score = 3"], ["e"]),
    (["score == 3"], ["e"]),
    (["score != 3"], ["a", "c", "d"]),
    (["error IS NULL"], ["a", "c", "d", "e"]),
    (["error is not null"], ["b"]),
    (["duration_s < 30", "score >= 3"], ["d", "e"]),  # repeated --filter: every clause holds
    (["duration_s < 30 AND score >= 3"], ["d", "e"]),
    (["language = 'fr' OR score < 2"], ["a", "e"]),
    (["language IN ('en', 'fr')"], ["a", "d", "e"]),
    (["language NOT IN ('en')"], ["b", "e"]),  # a null language is in no list, nor out of it
    (["NOT (score < 4) AND error IS NULL"], ["c", "d"]),
    (["rows >= 2.5 AND rows < 5"], ["c", "d"]),
    (["NOT ok"], ["b"]),
    (['"odd name" = 1 AND score > -1e3'], ["a", "e"]),
    (["language LIKE 'e%'"], ["a", "d"]),
    (["len(segments) > 0"], ["a"]),
    (["coalesce(score, 0) < 2"], ["a", "b"]),
    (["regexp_matches(id, '^[ab]$') AND upper(language) = 'EN'"], ["a"]),
    (["len(id) * 2 = abs(-2) AND NOT contains(language, 'd')"], ["a", "d", "e"]),
    (["segments[1].text ILIKE 'H%'"], ["a"]),
])
def test_filters_select_the_right_rows(table, clauses, ids):
    assert kept_ids(clauses, table) == ids
    assert kept_ids(clauses, table.to_batches()[0]) == ids  # record batches too (streaming merge)


def test_kept_rows_keep_their_arrow_types(table):
    kept, _ = RowFilter(["score >= 3"]).apply(table)
    assert kept.schema == table.schema
    assert kept.column("segments").to_pylist() == [None, [], []]


def test_counts_say_how_many_each_clause_dropped(table):
    f = RowFilter(["duration_s < 30", "score >= 3"])
    _, counts = f.apply(table)
    assert (counts.rows, counts.kept, counts.dropped) == (5, 2, 3)
    assert counts.by_clause == {"duration_s < 30": {"false": 1, "null": 0},
                                "score >= 3": {"false": 1, "null": 1}}
    assert "kept 2 of 5 rows, dropped 3" in counts.describe()
    assert "score >= 3: 1 false, 1 null" in counts.describe()


def test_counts_add_up_over_batches(table):
    f = RowFilter(["score >= 3"])
    total = FilterCounts()
    for batch in table.to_batches(max_chunksize=2):
        total.add(f.apply(batch)[1])
    assert total.to_dict() == {"rows": 5, "kept": 3, "dropped": 2,
                               "dropped_by_clause": {"score >= 3": {"false": 1, "null": 1}}}


@pytest.mark.parametrize("clause, message", [
    ("read_text('/etc/passwd') IS NOT NULL", "read_text() is not a function"),
    ("(SELECT count(*) FROM read_csv('/etc/passwd')) > 0", "subqueries are not allowed"),
    ("(SELECT count(*) FROM duckdb_settings()) > 0", "subqueries are not allowed"),
    ("score > (SELECT 1)", "subqueries are not allowed"),
    ("EXISTS (SELECT 1)", "subqueries are not allowed"),
    ("score > 1; COPY (SELECT 1) TO '/tmp/x.csv'", "bad filter"),
    ("score > 1) OR (true", "bad filter"),
    ("score >= 3 UNION SELECT 1", "bad filter"),
    ("getenv('HOME') IS NOT NULL", "bad filter"),
])
def test_a_clause_cannot_reach_files_or_other_tables(table, clause, message, tmp_path):
    with pytest.raises(FilterError, match="bad filter") as e:
        RowFilter([clause]).apply(table)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("clause, message", [
    ("", "a clause is empty"),
    ("score >=", "syntax error"),
    ("(" * 70 + "score > 3" + ")" * 70, "nested more than 64 deep"),
    ("NOT " * 80 + "ok", "nested more than 64 deep"),
    ("(" * 5000 + "ok" + ")" * 5000, "more than 2000"),
    ("score > 1" + " AND score > 1" * 200, f"more than {MAX_CLAUSE_CHARS}"),
    ("score > 1e999", "does not fit"),
    ("rows > 99999999999999999999999999999999999999999", "does not fit"),
    ("rows < -9223372036854775809", "does not fit"),
    # output sized by an argument, not by the row: refused before anything runs
    ("len(range(0, 1000000000)) > 0", "range() is not a function a filter may use"),
    ("len(generate_series(1, rows * 1000000000)) > 0", "generate_series()"),
    ("repeat('x', 1000000000) = 'x'", "repeat()"),
    ("lpad(language, 1000000000, 'x') = ''", "lpad()"),
    ("bar(score, 0, 1, 1000000000) = ''", "bar()"),
    ("len(regexp_replace(language, '', repeat('x', 99), 'g')) > 0", "regexp_replace()"),
    ("len(list_transform(segments, s -> range(0, 1000000000))) > 0", "list_transform()"),
    ("no_such_function(score)", "no_such_function()"),
])
def test_bad_clauses_are_one_line_errors(clause, message):
    with pytest.raises(FilterError) as e:
        RowFilter([clause])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("clauses, message", [
    (["nope > 1"], "no column nope; the columns are id, score"),
    (["error IS NULL", "missing IS NOT NULL"], "no column missing"),
    (['language = "fr"'], "no column fr"),  # double quotes name a column in SQL
    (["score + 1"], "not true or false"),
])
def test_filters_that_do_not_fit_the_data(table, clauses, message):
    f = RowFilter(clauses)
    with pytest.raises(FilterError) as e:
        f.check(table.schema)
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FilterError):
        f.apply(table)


def test_a_value_that_does_not_convert_is_an_error_when_applied(table):
    f = RowFilter(["language = 3"])
    with pytest.raises(FilterError, match="'en'"):
        f.apply(table)


def test_the_sandbox_reads_no_file_and_cannot_be_reopened(tmp_path):
    import duckdb

    from asrd.filters import SANDBOX

    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    db = duckdb.connect(":memory:", config=SANDBOX)
    with pytest.raises(duckdb.PermissionException):
        db.execute(f"SELECT * FROM read_csv('{secret}')").fetchall()
    with pytest.raises(duckdb.PermissionException):
        db.execute(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'").fetchall()
    with pytest.raises(duckdb.Error, match="locked"):
        db.execute("SET enable_external_access = true").fetchall()
    assert not (tmp_path / "out.csv").exists()
