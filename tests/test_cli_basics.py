"""CLI basics: --help lists every command fast, --version, and no TensorFlow at import."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from edgekit import __version__
from edgekit.cli import cli


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


def test_help_lists_every_command_with_one_line():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for name in cli.commands:
        assert name in r.output
    for name, cmd in cli.commands.items():
        assert cmd.get_short_help_str(), f"command {name} has no one-line help"
    assert "..." not in r.output.split("Commands:")[1], (
        "a command's one-line help is cut off in the command list"
    )


def test_import_does_not_load_tensorflow():
    code = "import sys, edgekit, edgekit.cli, edgekit.recipes, edgekit.artifacts; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
