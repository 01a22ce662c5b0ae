"""Row filters for `asrd merge --filter`: SQL WHERE clauses evaluated by DuckDB in a sandbox,
with a count of the rows each clause dropped.

Each `--filter` is one clause (a SQL boolean expression over a row's columns, e.g.
"score >= 3", "error IS NULL", "language IN ('en', 'fr')", "len(text) > 3"); a row is kept when
every clause is true. A clause that is null for a row (a missing value: "score >= 3" on a row the
judge could not score) drops it, as in SQL, and is counted apart from one that is false.

Why DuckDB and how it is confined: a well-kept SQL engine instead of a hand-written grammar, run
in-process on an in-memory connection that cannot read or write files or reach the network
(`enable_external_access=false`), whose configuration the clause cannot change back
(`lock_configuration`), and which installs or loads no extension. A clause is one expression:
several statements, subqueries (the only way to name a table) and over-long or deeply nested text
are refused before it runs, as are number literals that do not fit a 64-bit integer or a finite
double (DuckDB would silently round them), and every function but those in FUNCTIONS.

Why a list of functions: a clause's cost must be bounded by the row it reads. Functions whose
output size is an argument (`range`, `repeat`, `lpad`, `bar`, `format`, ...) are not: DuckDB
folds `len(range(0, 1000000000)) > 0` into a constant while planning, which neither its
`memory_limit` (lists are not in its buffer pool) nor `max_execution_time` nor an interrupt
stops (measured with DuckDB 2.0: 10 GB resident and still running after 20 s). The functions
allowed compare, compute or search within a row's own values, so a batch costs time and memory
in proportion to its data. Rows are handed over from Arrow; DuckDB only returns a
true/false/null per clause and row, so the kept rows keep their exact Arrow types.

    f = RowFilter(["duration_s < 30", "score >= 3"])
    f.check(table.schema)              # unknown columns, syntax, literals: before any data
    kept, counts = f.apply(table)      # counts.dropped, counts.by_clause
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

MAX_CLAUSE_CHARS = 2000  # longer text is not a row filter (and bounds the parser's work)
MAX_DEPTH = 64  # nesting (parentheses, NOT, AND/OR, calls) a clause may use
INT64 = 2**63

# The functions (and operators, by DuckDB's names for them) a clause may call. Not `replace` or
# `regexp_replace`: a long replacement for every character multiplies a row's size.
FUNCTIONS = frozenset({
    "+", "-", "*", "/", "//", "%", "^", "**", "||",
    "~~", "!~~", "~~*", "!~~*", "~~~",  # LIKE, NOT LIKE, ILIKE, NOT ILIKE, GLOB
    "len", "length", "strlen", "char_length", "octet_length", "lower", "upper", "lcase", "ucase",
    "trim", "ltrim", "rtrim", "strip_accents", "nfc_normalize", "contains", "starts_with",
    "ends_with", "prefix", "suffix", "instr", "strpos", "position", "substring", "substr",
    "left", "right", "split_part", "string_split", "reverse", "concat", "concat_ws",
    "regexp_matches", "regexp_full_match", "regexp_extract",
    "abs", "round", "floor", "ceil", "ceiling", "trunc", "sign", "sqrt", "cbrt", "ln", "log",
    "log2", "log10", "exp", "pow", "power", "mod", "greatest", "least", "isnan", "isinf",
    "isfinite", "nullif", "typeof",
    "list_contains", "list_has", "array_contains", "array_has", "list_has_any", "array_has_any",
    "list_has_all", "array_has_all", "list_position", "array_position", "array_length",
    "list_extract", "array_extract",
})

SANDBOX = {
    "enable_external_access": False,  # no file, network or attached database
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "max_expression_depth": MAX_DEPTH,
    "threads": 1,  # rows come back in their order
    "lock_configuration": True,  # last: nothing above can be SET back
}


class FilterError(ValueError):
    """A filter that cannot be used: the message names the clause and what is wrong."""


@dataclass
class FilterCounts:
    """What a filter did: rows seen and kept, and per clause how many rows it failed, as false
    and as null (a missing value). A row can fail several clauses, so the clause counts may add
    up to more than `dropped`."""

    rows: int = 0
    kept: int = 0
    by_clause: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.rows - self.kept

    def add(self, other: FilterCounts) -> None:
        self.rows += other.rows
        self.kept += other.kept
        for clause, counts in other.by_clause.items():
            mine = self.by_clause.setdefault(clause, {"false": 0, "null": 0})
            for key, n in counts.items():
                mine[key] += n

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "kept": self.kept, "dropped": self.dropped,
                "dropped_by_clause": self.by_clause}

    def describe(self) -> str:
        why = "; ".join(f"{clause}: {c['false']} false, {c['null']} null"
                        for clause, c in self.by_clause.items() if c["false"] or c["null"])
        return (f"filter kept {self.kept} of {self.rows} rows, dropped {self.dropped}"
                + (f" ({why})" if why else ""))


class RowFilter:
    """The clauses, checked for shape at construction and against the data's columns by
    `check`; `apply` evaluates them on a table or record batch."""

    def __init__(self, clauses: list[str]):
        self.clauses = [c.strip() for c in clauses]
        if not self.clauses:
            raise FilterError("bad filter: no clause given")
        for clause in self.clauses:
            _check_text(clause)
        import duckdb  # here, not at import: the CLI (and every task) imports this module

        self._duckdb = duckdb
        self._db = duckdb.connect(":memory:", config=SANDBOX)
        self._checked: pa.Schema | None = None
        for clause in self.clauses:
            self._check_literals(clause)

    def check(self, schema: pa.Schema) -> None:
        """Bind every clause to the columns of `schema`: an unknown column, a wrong function
        or a clause that is not a boolean fails here, before any data is read."""
        if self._checked is not None and self._checked.equals(schema):
            return
        empty = schema.empty_table()
        for clause in self.clauses:
            out = self._evaluate(empty, [clause], schema)
            if not pa.types.is_boolean(out.schema.field(0).type) and \
                    not pa.types.is_null(out.schema.field(0).type):
                raise FilterError(f"bad filter {_show(clause)}: it is a "
                                  f"{out.schema.field(0).type}, not true or false")
        self._checked = schema

    def apply(self, data: pa.Table | pa.RecordBatch) -> tuple[pa.Table | pa.RecordBatch,
                                                               FilterCounts]:
        """The rows for which every clause is true, and what was dropped by which clause."""
        self.check(data.schema)
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        verdicts = self._evaluate(table, self.clauses, data.schema)
        if verdicts.num_rows != data.num_rows:
            raise FilterError(f"filter returned {verdicts.num_rows} verdicts for "
                              f"{data.num_rows} rows")
        keep = pa.array([True] * data.num_rows, pa.bool_())
        counts = FilterCounts(rows=data.num_rows)
        for clause, verdict in zip(self.clauses, verdicts.columns):
            verdict = verdict.combine_chunks().cast(pa.bool_())
            true = pc.sum(pc.fill_null(verdict, False)).as_py() or 0
            nulls = verdict.null_count
            counts.by_clause[clause] = {"false": data.num_rows - true - nulls, "null": nulls}
            keep = pc.and_(keep, pc.fill_null(verdict, False))
        kept = data.filter(keep)
        counts.kept = kept.num_rows
        return kept, counts

    def close(self) -> None:
        self._db.close()

    def _evaluate(self, table: pa.Table, clauses: list[str], schema: pa.Schema) -> pa.Table:
        try:
            rel = self._db.from_arrow(table)
            return rel.select(*[self._duckdb.SQLExpression(c).alias(f"c{i}")
                                for i, c in enumerate(clauses)]).to_arrow_table()
        except self._duckdb.Error as e:
            raise FilterError(_explain(clauses, e, schema)) from None

    def _check_literals(self, clause: str) -> None:
        """Refuse subqueries and numbers DuckDB would round, from DuckDB's own parse tree."""
        try:
            raw = self._db.execute("SELECT json_serialize_sql(?)",
                                   [f"SELECT ({clause})"]).fetchall()[0][0]
        except self._duckdb.Error as e:
            raise FilterError(f"bad filter {_show(clause)}: {_first_line(e)}") from None
        tree = json.loads(raw)  # its depth is bounded: the parser refuses deeper nesting
        if tree.get("error"):
            why = tree.get("error_message") or "not a SQL expression"
            if "expression depth" in why:
                why = f"nested more than {MAX_DEPTH} deep"
            raise FilterError(f"bad filter {_show(clause)}: {why.splitlines()[0]}")
        stack: list[Any] = [tree["statements"]]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(node)
            elif isinstance(node, dict):
                if node.get("class") == "SUBQUERY":
                    raise FilterError(f"bad filter {_show(clause)}: a clause is about one row; "
                                      "subqueries are not allowed")
                _check_function(clause, node.get("function_name"))
                _check_number(clause, node.get("literal"))
                stack.extend(node.values())


def _check_text(clause: str) -> None:
    if not clause:
        raise FilterError("bad filter: a clause is empty")
    if len(clause) > MAX_CLAUSE_CHARS:
        raise FilterError(f"bad filter {_show(clause)}: {len(clause)} characters, more than "
                          f"{MAX_CLAUSE_CHARS}")


def _check_function(clause: str, name: Any) -> None:
    if isinstance(name, str) and name.lower() not in FUNCTIONS:
        raise FilterError(f"bad filter {_show(clause)}: {name}() is not a function a filter may "
                          "use (a clause may compare, compute and search within a row's own values: "
                          "the README's `asrd merge --filter` paragraph lists the functions)")


def _check_number(clause: str, literal: Any) -> None:
    if not isinstance(literal, dict) or literal.get("kind") not in ("INTEGER", "NUMERIC"):
        return
    text = str(literal.get("text", ""))
    try:
        ok = (-INT64 <= int(text) < INT64 if literal["kind"] == "INTEGER"
              else math.isfinite(float(text)))
    except ValueError:
        ok = True  # a form Python does not read (e.g. 1_000); DuckDB reads it exactly
    if not ok:
        raise FilterError(f"bad filter {_show(clause)}: the number {text[:30]} does not fit a "
                          "64-bit integer or a finite double")


def _show(clause: str) -> str:
    return repr(clause if len(clause) <= 80 else clause[:77] + "...")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _explain(clauses: list[str], e: Exception, schema: pa.Schema) -> str:
    which = clauses[0] if len(clauses) == 1 else " AND ".join(clauses)
    m = re.search(r'Referenced column "([^"]+)" not found', str(e))
    if m:
        return (f"bad filter {_show(which)}: no column {m.group(1)}; the columns are "
                f"{', '.join(schema.names)}")
    return f"bad filter {_show(which)}: {_first_line(e)}"
