"""The merge filter language: parsing, evaluation on pyarrow data, drop counts, clear errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from asrd.filters import FilterCounts, FilterError, parse_filter


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
    })


def kept_ids(text: str, data) -> list[str]:
    kept, _ = parse_filter(text).apply(data)
    return kept.column("id").to_pylist()


@pytest.mark.parametrize("text, ids", [
    ("score >= 3", ["c", "d", "e"]),  # the null score (an unscored row) is dropped
    ("score > 3", ["c", "d"]),
    ("score == 3", ["e"]),
    ("score = 3", ["e"]),
    ("score != 3", ["a", "c", "d"]),
    ("error is null", ["a", "c", "d", "e"]),
    ("error IS NOT NULL", ["b"]),
    ("duration_s < 30 and score >= 3", ["d", "e"]),
    ("language == 'en'", ["a", "d"]),
    ('language == "fr" or score < 2', ["a", "e"]),
    ("language in ('en', 'fr')", ["a", "d", "e"]),
    ("language not in ('en')", ["b", "e"]),  # a null language is in no list, nor out of it
    ("not language in ('en')", ["b", "e"]),
    ("not (score < 4) and error is null", ["c", "d"]),
    ("(score >= 4 or language == 'de') and duration_s <= 20", ["b", "d"]),
    ("rows >= 2.5 and rows < 5", ["c", "d"]),
    ("ok == false", ["b"]),
    ("`odd name` == 1 and score > -1e3", ["a", "e"]),
    ("duration_s >= .5e1", ["a", "b", "c", "d", "e"]),
])
def test_filters_select_the_right_rows(table, text, ids):
    assert kept_ids(text, table) == ids
    assert kept_ids(text, table.to_batches()[0]) == ids  # record batches too (streaming merge)


def test_counts_say_how_many_were_dropped_and_why(table):
    f = parse_filter("duration_s < 30 and score >= 3")
    assert [source for source, _ in f.clauses] == ["duration_s < 30", "score >= 3"]
    _, counts = f.apply(table)
    assert (counts.rows, counts.kept, counts.dropped) == (5, 2, 3)
    assert counts.by_clause == {"duration_s < 30": {"false": 1, "null": 0},
                                "score >= 3": {"false": 1, "null": 1}}
    assert "kept 2 of 5 rows, dropped 3" in counts.describe(f.text)
    assert "score >= 3: 1 false, 1 null" in counts.describe(f.text)


def test_counts_add_up_over_batches(table):
    f = parse_filter("score >= 3")
    total = FilterCounts()
    for batch in table.to_batches(max_chunksize=2):
        total.add(f.apply(batch)[1])
    assert total.to_dict() == {"rows": 5, "kept": 3, "dropped": 2,
                               "dropped_by_clause": {"score >= 3": {"false": 1, "null": 1}}}


def test_an_or_at_the_top_is_one_clause():
    f = parse_filter("score >= 3 or error is null")
    assert [source for source, _ in f.clauses] == ["score >= 3 or error is null"]
    assert f.columns == {"score", "error"}


@pytest.mark.parametrize("text, message", [
    ("", "it is empty"),
    ("score >= x3", "expected a number, a quoted string, true or false at position 9, "
                    "found 'x3'"),
    ("score >=", "found the end"),
    ("score 3", "expected a comparison"),
    ("score == null", "write 'score is null'"),
    ("(score > 3", "expected ')'"),
    ("score > 3 and", "expected a column name at position 13"),
    ("score >= 3 3", "expected 'and', 'or' or the end"),
    ("score ~ 3", "unexpected '~ 3' at position 6"),
    ("__import__('os').system('x')", "unexpected \".system('x\" at position 16"),
    ("language in ('en' 'de')", "expected ',' or ')'"),
    ("score is 3", "expected 'null'"),
])
def test_bad_predicates_name_the_bad_token(text, message):
    with pytest.raises(FilterError, match="bad filter") as e:
        parse_filter(text)
    assert message in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("nope > 1", "no column nope; the columns are id, score"),
    ("language == 3", "column 'language' is string but 3 is int"),
    ("score >= 'a'", "column 'score' is double but 'a' is str"),
    ("ok == 1", "column 'ok' is bool"),
    ("error is null and missing is not null", "no column missing"),
])
def test_filters_that_do_not_fit_the_data(table, text, message):
    f = parse_filter(text)
    with pytest.raises(FilterError) as e:
        f.check(table.schema)
    assert message in str(e.value)
    with pytest.raises(FilterError):
        f.apply(table)
