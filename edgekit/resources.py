"""Locate the YAML data (recipes, device profiles) in a source checkout or an installed wheel."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(kind: str) -> Path:
    """Folder holding the bundled `kind` files ("recipes" or "devices").

    In a checkout (editable install) this is the top-level folder; in a wheel it is the copy
    shipped as the `edgekit.<kind>` package.
    """
    if kind not in ("recipes", "devices"):
        raise ValueError(f"Expected kind 'recipes' or 'devices'. Received: {kind!r}")
    checkout = _REPO_ROOT / kind
    if checkout.is_dir() and (_REPO_ROOT / "pyproject.toml").is_file():
        return checkout
    return Path(str(resources.files(f"edgekit.{kind}")))


def bundled(kind: str) -> dict[str, Path]:
    """Map of bundled names to their YAML files."""
    folder = data_dir(kind)
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def asset(name: str) -> Path:
    """A file shipped in edgekit/assets (the example teacher, the latency reference network)."""
    return Path(__file__).resolve().parent / "assets" / name
