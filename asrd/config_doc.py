"""`asrd config --write`: the config as a commented YAML file, one line on every key.

The lines come from the schema itself: each field's trailing comment in asrd/config.py and each
section's docstring, so the documentation lives next to the defaults and cannot drift from them.
Keys in the config hash are marked [output]. The `faults` section (test-only hooks) is left
out: a starter file is what users edit.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import typing
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from asrd import config as config_mod

HEADER = """\
# asrd run configuration (`asrd config --write`). Every key is listed with its value;
# `asrd plan -c FILE` freezes it into the run directory.
# Keys marked [output] change the rows a run writes: they are in the config hash, and changing
# one after `asrd plan` is refused as config drift. The other keys say where and how the run
# executes (engines, GPUs, batching, SLURM, store) and may change between resubmits.
"""


@cache
def field_help() -> dict[str, str]:
    """Dotted key -> its one-line description, for every key and section of the schema."""
    lines: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        module = inspect.getmodule(cls)
        node, comments = _class_source(module)[cls.__name__], _module_comments(module)
        hints = typing.get_type_hints(cls)
        for stmt in node.body:
            if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
                continue
            name = stmt.target.id
            key = prefix + name
            kind = hints[name]
            if dataclasses.is_dataclass(kind):
                lines[key] = _first_line(inspect.getdoc(kind))
                walk(kind, key + ".")
            elif stmt.lineno in comments:
                lines[key] = comments[stmt.lineno]

    walk(config_mod.Config, "")
    return lines


@cache
def _class_source(module: Any) -> dict[str, ast.ClassDef]:
    """The classes of a schema module (the config, or the section it imports, e.g. the quality
    thresholds), by name, as parsed from its source."""
    return {node.name: node for node in ast.parse(inspect.getsource(module)).body
            if isinstance(node, ast.ClassDef)}


@cache
def _module_comments(module: Any) -> dict[int, str]:
    return _trailing_comments(inspect.getsource(module))


def _trailing_comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment that ends that line of code."""
    out: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in code_lines:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.COMMENT):
            code_lines.add(tok.start[0])
    return out


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ")


def _value(value: Any) -> str:
    """A YAML value that loads back to the same value (JSON is YAML)."""
    if value == "???":
        return "???"
    return json.dumps(value, ensure_ascii=False)


def starter_yaml(cfg: DictConfig) -> str:
    """`cfg` as YAML with a comment line above every key and section."""
    help_ = field_help()
    out = [HEADER]

    def emit(tree: dict[str, Any], prefix: str, depth: int) -> None:
        pad = "  " * depth
        for name, value in tree.items():
            key = prefix + name
            line = help_.get(key, "")
            if config_mod.is_output_key(key) and not isinstance(value, dict):
                line = f"[output] {line}"
            if depth == 0:
                out.append("")
            if line:
                out.extend(textwrap.wrap(line, width=99, initial_indent=f"{pad}# ",
                                         subsequent_indent=f"{pad}# "))
            if isinstance(value, dict) and key not in config_mod.FREE_FORM_MAPS:
                out.append(f"{pad}{name}:")
                emit(value, key + ".", depth + 1)
            else:
                out.append(f"{pad}{name}: {_value(value)}")

    tree = OmegaConf.to_container(cfg, resolve=True)
    tree.pop("faults", None)
    emit(tree, "", 0)
    return "\n".join(out) + "\n"
