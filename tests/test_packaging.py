"""Packaging: the wheel carries every subpackage plus the recipes, device profiles and assets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One worker builds the wheel (the fixture is module-scoped).
pytestmark = pytest.mark.xdist_group("packaging")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy: an in-tree build writes build/ and *.egg-info, which a concurrent build
    # (another test run, an editable install) would race on.
    src = tmp_path_factory.mktemp("src") / "edgekit-src"
    skip = (".venv", ".git", "build", "dist", "runs", ".pytest_cache", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*skip))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"pip wheel failed: {r.stderr[-3000:]}"
    (whl,) = out.glob("edgekit-*.whl")
    return whl


def test_wheel_ships_recipes_and_devices(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("recipes", "devices"):
        for f in (ROOT / kind).glob("*.yaml"):
            assert f"edgekit/{kind}/{f.name}" in names, f"{kind}/{f.name} missing from the wheel"
    for f in (ROOT / "devices" / "cores").glob("*.yaml"):  # core classes and their fit
        assert f"edgekit/devices/cores/{f.name}" in names, f"devices/cores/{f.name} missing"
    assert any(n.startswith("edgekit/recipes/") and n.endswith(".yaml") for n in names)


def test_wheel_ships_every_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (ROOT / "edgekit").rglob("__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} missing from the wheel: add its package to pyproject.toml"


def test_wheel_ships_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assets = list((ROOT / "edgekit" / "assets").glob("*"))
    assert any(f.name == "teacher_shapes.keras" for f in assets)
    for f in assets:
        assert f"edgekit/assets/{f.name}" in names
