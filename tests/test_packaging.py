"""Packaging: the wheel carries every subpackage plus the recipes and device profiles."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("edgekit-*.whl")
    return whl


def test_wheel_ships_recipes_and_devices(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in ("recipes", "devices"):
        for f in (ROOT / kind).glob("*.yaml"):
            assert f"edgekit/{kind}/{f.name}" in names, f"{kind}/{f.name} missing from the wheel"
    assert any(n.startswith("edgekit/recipes/") and n.endswith(".yaml") for n in names)


def test_wheel_ships_every_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (ROOT / "edgekit").rglob("__init__.py"):
        rel = init.relative_to(ROOT).as_posix()
        assert rel in names, f"{rel} missing from the wheel: add its package to pyproject.toml"


def test_wheel_ships_example_teacher_when_present(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (ROOT / "edgekit" / "assets").glob("*"):
        assert f"edgekit/assets/{f.name}" in names
