"""Row filters for `asrd merge --filter`: a tiny predicate language compiled to a pyarrow
expression, with a count of the rows each clause dropped.

Why a parser and not `eval`: the filter comes from a command line or a config file and is applied
to data; a parser accepts only the grammar below and names the bad token when it fails.

    expr       := or
    or         := and ("or" and)*
    and        := term ("and" term)*
    term       := "not" term | "(" expr ")" | comparison
    comparison := NAME OP literal | NAME "is" ["not"] "null"
                | NAME ["not"] "in" "(" literal ("," literal)* ")"
    OP         := == | = | != | < | <= | > | >=
    literal    := number | 'string' | "string" | true | false
    NAME       := identifier, or `any name` in backquotes

Keywords are case-insensitive. A comparison (or `in`) with a missing value (null) is neither
true nor false and the row is dropped, as in SQL: "score >= 3" drops the rows the judge could
not score, and so does "not score < 3".

    f = parse_filter("duration_s < 30 and score >= 3")
    f.check(table.schema)              # unknown columns, wrong literal types
    kept, counts = f.apply(table)      # counts.dropped, counts.by_clause
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc


class FilterError(ValueError):
    """A filter that cannot be parsed or does not fit the data; the message says where."""


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`[^`]+`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
""", re.VERBOSE)
KEYWORDS = {"and", "or", "not", "is", "null", "in", "true", "false"}
_OPS = {"==": pc.equal, "=": pc.equal, "!=": pc.not_equal, "<": pc.less,
        "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal}


@dataclass(frozen=True)
class _Token:
    kind: str  # number | string | name | keyword | op | punct | end
    text: str
    pos: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FilterError(f"bad filter {text!r}: unexpected {text[pos:pos + 10]!r} at "
                              f"position {pos}")
        kind, value = m.lastgroup, m.group()
        if kind == "name" and value.lower() in KEYWORDS:
            kind, value = "keyword", value.lower()
        elif kind == "quoted":
            kind, value = "name", value[1:-1]
        if kind != "ws":
            tokens.append(_Token(kind, value, pos, m.end()))
        pos = m.end()
    tokens.append(_Token("end", "", len(text), len(text)))
    return tokens


@dataclass(frozen=True)
class _Comparison:
    """One comparison with literals, kept for the schema check."""

    column: str
    literals: tuple[Any, ...]
    source: str


class _Parser:
    """Recursive descent over the tokens. The top-level `and` terms are kept apart (with their
    source text) so that the drop counts can say which clause dropped a row."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.columns: set[str] = set()
        self.comparisons: list[_Comparison] = []

    def parse(self) -> tuple[pc.Expression, list[tuple[str, pc.Expression]]]:
        if self._peek().kind == "end":
            raise FilterError("bad filter: it is empty")
        clauses = self._and_terms()
        if self._at("or"):  # an `or` at the top: the whole filter is one clause
            expr = _all(clauses)
            while self._accept("keyword", "or"):
                expr = expr | _all(self._and_terms())
            clauses = [(self.text.strip(), expr)]
        self._expect("end", None, "'and', 'or' or the end")
        return _all(clauses), clauses

    def _or(self) -> pc.Expression:
        expr = _all(self._and_terms())
        while self._accept("keyword", "or"):
            expr = expr | _all(self._and_terms())
        return expr

    def _and_terms(self) -> list[tuple[str, pc.Expression]]:
        terms = [self._term()]
        while self._accept("keyword", "and"):
            terms.append(self._term())
        return terms

    def _term(self) -> tuple[str, pc.Expression]:
        start = self.i
        if self._accept("keyword", "not"):
            expr = ~self._term()[1]
        elif self._accept("punct", "("):
            expr = self._or()
            self._expect("punct", ")", "')'")
        else:
            expr = self._comparison()
        return self._source(start), expr

    def _comparison(self) -> pc.Expression:
        start = self.i
        name = self._expect("name", None, "a column name").text
        self.columns.add(name)
        column = pc.field(name)
        if self._accept("keyword", "is"):
            negate = self._accept("keyword", "not") is not None
            self._expect("keyword", "null", "'null'")
            return column.is_valid() if negate else column.is_null()
        negate = self._accept("keyword", "not") is not None
        if negate or self._at("in"):
            self._expect("keyword", "in", "'in'")
            self._expect("punct", "(", "'('")
            values = [self._literal()]
            while self._accept("punct", ","):
                values.append(self._literal())
            self._expect("punct", ")", "',' or ')'")
            self.comparisons.append(_Comparison(name, tuple(values), self._source(start)))
            # A missing value is in no list and out of none: null, as in SQL.
            expr = pc.if_else(column.is_valid(), column.isin(values), pa.scalar(None, pa.bool_()))
            return ~expr if negate else expr
        op = self._expect("op", None, "a comparison (==, !=, <, <=, >, >=, is, in)").text
        if self._at("null"):
            self._fail(f"a value ('{name} {op} null' is never true: write "
                       f"'{name} is null' or '{name} is not null')")
        value = self._literal()
        self.comparisons.append(_Comparison(name, (value,), self._source(start)))
        return _OPS[op](column, value)

    def _literal(self) -> Any:
        tok = self._peek()
        if tok.kind == "number":
            self.i += 1
            return float(tok.text) if re.search(r"[.eE]", tok.text) else int(tok.text)
        if tok.kind == "string":
            self.i += 1
            return re.sub(r"\\(.)", r"\1", tok.text[1:-1])
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            self.i += 1
            return tok.text == "true"
        self._fail("a number, a quoted string, true or false")

    def _peek(self) -> _Token:
        return self.tokens[self.i]

    def _at(self, keyword: str) -> bool:
        tok = self._peek()
        return tok.kind == "keyword" and tok.text == keyword

    def _accept(self, kind: str, text: str | None = None) -> _Token | None:
        tok = self._peek()
        if tok.kind == kind and (text is None or tok.text == text):
            self.i += 1
            return tok
        return None

    def _expect(self, kind: str, text: str | None, what: str) -> _Token:
        tok = self._accept(kind, text)
        if tok is None:
            self._fail(what)
        return tok

    def _fail(self, what: str) -> NoReturn:
        tok = self._peek()
        found = "the end" if tok.kind == "end" else repr(tok.text)
        raise FilterError(f"bad filter {self.text!r}: expected {what} at position {tok.pos}, "
                          f"found {found}")

    def _source(self, start: int) -> str:
        return self.text[self.tokens[start].pos:self.tokens[self.i - 1].end]


def _all(terms: list[tuple[str, pc.Expression]]) -> pc.Expression:
    expr = terms[0][1]
    for _, e in terms[1:]:
        expr = expr & e
    return expr


@dataclass
class FilterCounts:
    """What a filter did: rows seen and kept, and per top-level clause (the parts of an
    `and`) how many rows it failed, as false and as null (a missing value). A row can fail
    several clauses, so the clause counts may add up to more than `dropped`."""

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

    def describe(self, text: str) -> str:
        why = "; ".join(f"{clause}: {c['false']} false, {c['null']} null"
                        for clause, c in self.by_clause.items() if c["false"] or c["null"])
        return (f"filter {text!r} kept {self.kept} of {self.rows} rows, dropped {self.dropped}"
                + (f" ({why})" if why else ""))


@dataclass(frozen=True)
class RowFilter:
    text: str
    expression: pc.Expression
    clauses: tuple[tuple[str, pc.Expression], ...]  # top-level `and` terms: (source, expr)
    columns: frozenset[str]
    comparisons: tuple[_Comparison, ...]

    def check(self, schema: pa.Schema) -> None:
        """Fail before reading data: unknown columns, literals of the wrong type."""
        missing = sorted(c for c in self.columns if c not in schema.names)
        if missing:
            raise FilterError(f"bad filter {self.text!r}: no column {', '.join(missing)}; the "
                              f"columns are {', '.join(schema.names)}")
        for comp in self.comparisons:
            col_type = schema.field(comp.column).type
            for value in comp.literals:
                if not _fits(col_type, value):
                    raise FilterError(
                        f"bad filter {self.text!r}: in {comp.source!r}, column {comp.column!r} "
                        f"is {col_type} but {value!r} is {type(value).__name__}")

    def apply(self, data: pa.Table | pa.RecordBatch) -> tuple[pa.Table | pa.RecordBatch,
                                                               FilterCounts]:
        """The rows for which the filter is true, and the counts of what was dropped and why."""
        self.check(data.schema)
        kept = data.filter(self.expression)
        counts = FilterCounts(rows=data.num_rows, kept=kept.num_rows)
        for source, clause in self.clauses:
            true = data.filter(clause).num_rows
            false = data.filter(~clause).num_rows
            counts.by_clause[source] = {"false": false, "null": data.num_rows - true - false}
        return kept, counts


def parse_filter(text: str) -> RowFilter:
    """Parse a predicate such as "score >= 3 and language == 'en'"; FilterError if bad."""
    parser = _Parser(text)
    expression, clauses = parser.parse()
    return RowFilter(text, expression, tuple(clauses), frozenset(parser.columns),
                     tuple(parser.comparisons))


def _fits(col_type: pa.DataType, value: Any) -> bool:
    if isinstance(value, bool):
        return pa.types.is_boolean(col_type)
    if isinstance(value, (int, float)):
        return (pa.types.is_integer(col_type) or pa.types.is_floating(col_type)
                or pa.types.is_decimal(col_type))
    return pa.types.is_string(col_type) or pa.types.is_large_string(col_type)
