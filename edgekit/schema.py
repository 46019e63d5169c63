"""Shared helpers for the YAML data files (recipes, device profiles): reading and error messages.

Both kinds are pydantic models with `extra="forbid"`; a bad file becomes one line that names the
file and line, the key path, what was expected and what was received. An error caused by a
`--set` override names the override instead of the file it was applied to.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekit.errors import RecipeError

Loc = tuple[Any, ...]


class Strict(BaseModel):
    """Base of the recipe models (stage configs included): unknown keys are errors, and so are
    assignments of values a field does not take."""

    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


def format_validation_error(
    what: str,
    source: str,
    err: ValidationError,
    *,
    union_tag_hint: str | None = None,
    tag_names: Sequence[str] = (),
    model: type[BaseModel] | None = None,
    raw: Any = None,
    overrides: Sequence[tuple[str, Loc]] = (),
) -> str:
    """One line: `Invalid <what> <source>: line N: key.path: message (received X); ...` (first 3
    errors). When `source` is a YAML file, each error names its line.

    union_tag_hint replaces pydantic's message for an unknown discriminator value; tag_names are
    the valid values (listed when the discriminator key is missing). model: the root model, to
    list the keys allowed where an unknown one was found. raw and overrides (`--set` text and
    the path in `raw` it set): an error at or under an override's path is blamed on it.
    """
    errors = err.errors()
    nodes = _yaml_nodes(source)
    parts, blamed = [], []
    for e in errors[:3]:
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc)
        msg = _message(e, union_tag_hint, tag_names, model)
        received = e.get("input")
        rec = (
            ""
            if isinstance(received, dict | list)
            or received is None
            or "Received" in msg
            or "received" in msg
            else f" (received {received!r})"
        )
        text = f"{where}: {msg}{rec}" if where else f"{msg}{rec}"
        override = _override_for(loc, raw, overrides)
        if override is not None:
            blamed.append(override)
            parts.append(f"--set {override}: {text}")
            continue
        line = _line_of(nodes, loc) if nodes is not None else None
        parts.append(f"line {line}: {text}" if line else text)
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    if blamed and len(blamed) == len(parts):
        # Only the overrides are wrong: name them, not the (possibly bundled) file.
        first = blamed[0]
        head = f"Invalid --set {first}" if len(set(blamed)) == 1 else "Invalid --set overrides"
        body = (
            [p.removeprefix(f"--set {first}: ") for p in parts] if len(set(blamed)) == 1 else parts
        )
        return f"{head} (applied to {what} {source}): " + "; ".join(body) + more
    return f"Invalid {what} {source}: " + "; ".join(parts) + more


def _message(
    e: dict[str, Any],
    union_tag_hint: str | None,
    tag_names: Sequence[str],
    model: type[BaseModel] | None,
) -> str:
    kind, msg, value = e["type"], e["msg"], e.get("input")
    names = ", ".join(tag_names)
    if kind == "extra_forbidden":
        msg = "unknown key"
        allowed = _allowed_keys(model, tuple(e["loc"])) if model is not None else None
        if allowed:
            key = str(e["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            msg = f"unknown key ({hint}expected one of {', '.join(allowed)})"
    elif kind == "union_tag_invalid" and union_tag_hint:
        msg = union_tag_hint
    elif kind == "union_tag_not_found":
        disc = str((e.get("ctx") or {}).get("discriminator", "'stage'")).strip("'")
        keys = list(value) if isinstance(value, dict) else []
        named = [k for k in keys if k in tag_names]
        if named:
            msg = (
                f"no '{disc}' key: write `- {disc}: {named[0]}` with the {named[0]} settings "
                f"beside it, not `- {named[0]}: {{...}}` (valid {disc}s: {names})"
            )
        elif keys:
            msg = (
                f"no '{disc}' key (received the keys {', '.join(map(str, keys))}); start each "
                f"entry with `- {disc}: NAME`, NAME one of {names or '?'}"
            )
        else:
            msg = f"expected a mapping with a '{disc}' key, one of {names or '?'}"
    elif kind == "model_attributes_type" and isinstance(value, str) and value in tag_names:
        msg = f"write `- stage: {value}` (a mapping), not the bare name '{value}'"
    return msg.removeprefix("Value error, ")


# -- which part of the input an error is about --------------------------------------------------


def _walk(loc: Loc, root: Any, child) -> list[Any]:
    """The nodes along `loc` from `root`; `child(node, part)` returns the next node or None.
    A part that is not there (a union's tag that pydantic adds to the path) is skipped."""
    path = [root]
    node = root
    for part in loc:
        nxt = child(node, part)
        if nxt is not None:
            node = nxt
            path.append(node)
    return path


def _raw_child(node: Any, part: Any) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def raw_path(loc: Loc, raw: Any) -> Loc:
    """`loc` (pydantic's) as a path into `raw`: the union tags pydantic inserts are dropped."""
    out: list[Any] = []
    node = raw
    for part in loc:
        nxt = _raw_child(node, part)
        if nxt is not None or (isinstance(node, dict) and part in node):
            out.append(part)
            node = nxt
        elif not (isinstance(node, dict) and any(v == part for v in node.values())):
            # a missing key (the error is about it); a union's tag (pydantic adds the node's
            # kind, which is a value of the node itself) is skipped
            out.append(part)
    return tuple(out)


def _override_for(loc: Loc, raw: Any, overrides: Sequence[tuple[str, Loc]]) -> str | None:
    if not overrides:
        return None
    path = raw_path(loc, raw) if raw is not None else loc
    for item, target in reversed(overrides):  # the last override of a key is the one in force
        n = min(len(path), len(target))
        if n and path[:n] == tuple(target)[:n]:
            return item
    return None


def _yaml_nodes(source: str) -> Any:
    """The composed YAML node tree of `source` when it is a readable YAML file, else None."""
    import yaml

    p = Path(source)
    if p.suffix not in (".yaml", ".yml"):
        return None
    try:
        return yaml.compose(p.read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None


def _line_of(root: Any, loc: Loc) -> int | None:
    """1-based line of the deepest node of `loc` found in the YAML node tree (keys' own lines)."""
    import yaml

    line = [None]

    def child(node: Any, part: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    line[0] = k.start_mark.line + 1
                    return v
        if (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            line[0] = node.value[part].start_mark.line + 1
            return node.value[part]
        return None

    if root is None:
        return None
    line[0] = root.start_mark.line + 1 if loc == () else None
    _walk(loc, root, child)
    return line[0]


# -- the keys a model allows at a path ---------------------------------------------------------


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str] | None:
    """The field names of the model that holds the unknown key at `loc`, or None."""
    t: Any = model
    for part in loc[:-1]:
        t = _step(t, part)
        if t is None:
            return None
    t = _model_in(t)
    return list(t.model_fields) if t is not None else None


def _members(t: Any) -> list[Any]:
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _members(typing.get_args(t)[0])
    if origin is typing.Union or isinstance(t, types.UnionType):
        return [m for a in typing.get_args(t) for m in _members(a)]
    return [t]


def _model_in(t: Any) -> type[BaseModel] | None:
    models = [m for m in _members(t) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _step(t: Any, part: Any) -> Any:
    for m in _members(t):
        if (
            isinstance(m, type)
            and issubclass(m, BaseModel)
            and isinstance(part, str)
            and part in m.model_fields
        ):
            return m.model_fields[part].annotation
        origin = typing.get_origin(m)
        if origin in (list, tuple, Sequence) and isinstance(part, int):
            args = typing.get_args(m)
            return args[0] if args else None
        if origin is dict and isinstance(part, str):
            args = typing.get_args(m)
            return args[1] if len(args) == 2 else None
    # a discriminated union's tag: the member whose Literal field takes this value
    for m in _members(t):
        if isinstance(m, type) and issubclass(m, BaseModel):
            for f in m.model_fields.values():
                if typing.get_origin(f.annotation) is typing.Literal and part in typing.get_args(
                    f.annotation
                ):
                    return m
    return None


def read_yaml_mapping(path: Path, what: str, hint: str) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; RecipeError on bad syntax or another shape.

    what: "Recipe" or "Device profile" (starts the message); hint: the keys it must have.
    """
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None)
        why = f" ({problem})" if problem else ""
        raise RecipeError(
            f"{what} {path} is not valid YAML{where}{why}. Fix the syntax and retry."
        ) from None
    except UnicodeDecodeError:
        raise RecipeError(f"{what} {path} is not a UTF-8 text file.") from None
    except OSError as e:
        raise RecipeError(f"Cannot read {what.lower()} {path} ({e.strerror}).") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{what} {path} must be a YAML mapping with {hint}.")
    return raw
