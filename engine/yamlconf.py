"""YAML loading that remembers where every value came from.

Configuration errors must name file, line and field; pydantic knows the field path, YAML
knows the line. This module joins the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)

Loc = tuple[str | int, ...]


class Strict(BaseModel):
    """A settings model: an unknown key is an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A configuration file is wrong; the message says where and how to fix it."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _compose(node: yaml.Node, path: Loc, lines: dict[Loc, int], scalars: yaml.SafeLoader) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = scalars.construct_object(key_node)
            if key in out:
                raise ConfigError([f"line {key_node.start_mark.line + 1}: key {key!r} appears twice"])
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _compose(value_node, (*path, key), lines, scalars)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_compose(v, (*path, i), lines, scalars) for i, v in enumerate(node.value)]
    return scalars.construct_object(node)


def load_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file; return the data and a map from value path to line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}{where}: not valid YAML: {exc}"]) from exc
    lines: dict[Loc, int] = {}
    if node is None:
        return None, lines
    try:
        return _compose(node, (), lines, yaml.SafeLoader("")), lines
    except ConfigError as exc:
        raise ConfigError([f"{path}:{p}" for p in exc.problems]) from exc


def loaded(paths: Iterable[Path], problems: list[str]) -> Iterator[tuple[Path, Any, dict[Loc, int]]]:
    """Each file's data and lines; a file that cannot be read or parsed adds its problems to
    `problems` and is left out (so every file's problems are reported at once)."""
    for path in paths:
        try:
            data, lines = load_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        yield path, data, lines


def listed(
    directory: Path, key: str, model: type[M], problems: list[str]
) -> Iterator[tuple[Path, dict[Loc, int], Loc, M]]:
    """The entries of `{key: [...]}` in every *.yaml / *.yml below directory (none if it does not
    exist), each validated as `model`: (file, its lines, the entry's location, the entry); an
    entry that is not valid adds its problems (file:line: field: what) and is left out."""
    files = (
        sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml")) if directory.is_dir() else []
    )
    for path, data, lines in loaded(files, problems):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            problems.append(f"{path}:1: {key}: expected a mapping {{{key}: [...]}}")
            continue
        for i, doc in enumerate(data[key]):
            try:
                entry = model.model_validate(doc)
            except ValidationError as exc:
                problems.extend(describe_errors(path, lines, exc, (key, i), data=doc))
                continue
            yield path, lines, (key, i), entry


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest part of loc that the file actually has."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _data_path(data: Any, loc: Loc) -> Loc:
    """Drop the parts pydantic adds that the file does not have (union discriminator tags)."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict):
            if part in cur:
                out.append(part)
                cur = cur[part]
                continue
            if part in (cur.get("kind"), cur.get("type")):
                continue
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
            continue
        out.append(part)
        cur = None
    return tuple(out)


def describe_errors(
    path: Path, lines: dict[Loc, int], exc: ValidationError, prefix: Loc = (), data: Any = None
) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str(err.get("ctx", {}).get("discriminator", "kind")).strip("'"))
        if data is not None:
            loc = _data_path(data, loc)
        full = (*prefix, *loc)
        line = line_of(lines, full)
        field = ".".join(str(p) for p in full) or "(top level)"
        where = f"{path}:{line}" if line else str(path)
        problems.append(f"{where}: {field}: {err['msg']}")
    return problems


def validate_file(model: type[M], path: Path, data: Any = None, lines: dict[Loc, int] | None = None) -> M:
    """Load path (unless data is given) and validate it as model, or raise ConfigError."""
    if data is None or lines is None:
        data, lines = load_yaml(path)
    if data is None:
        raise ConfigError([f"{path}: file is empty"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(path, lines, exc, data=data)) from exc
