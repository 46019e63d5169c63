"""Shared helpers for the YAML data files (recipes, device profiles): reading and error messages.

Both kinds are pydantic models with `extra="forbid"`; a bad file becomes one line that names the
file, the key path, what was expected and what was received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgekit.errors import RecipeError


def format_validation_error(
    what: str, source: str, err: ValidationError, *, union_tag_hint: str | None = None
) -> str:
    """One line: `Invalid <what> <source>: key.path: message (received X); ...` (first 3 errors).

    union_tag_hint replaces pydantic's message for an unknown discriminator value.
    """
    errors = err.errors()
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "union_tag_invalid" and union_tag_hint:
            msg = union_tag_hint
        msg = msg.removeprefix("Value error, ")
        received = e.get("input")
        rec = (
            ""
            if isinstance(received, dict | list) or received is None or "Received" in msg
            else f" (received {received!r})"
        )
        parts.append(f"{loc}: {msg}{rec}" if loc else f"{msg}{rec}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"Invalid {what} {source}: " + "; ".join(parts) + more


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
        raise RecipeError(
            f"{what} {path} is not valid YAML{where}. Fix the syntax and retry."
        ) from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{what} {path} must be a YAML mapping with {hint}.")
    return raw
