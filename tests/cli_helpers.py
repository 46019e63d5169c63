"""CLI helpers shared by the command-line tests (click's CliRunner, real edgekit commands).

from cli_helpers import invoke, one_line_error   # tests/ is on sys.path under pytest
err = one_line_error(invoke("bench", "missing.tflite"))
"""

from __future__ import annotations

from click.testing import CliRunner

from edgekit.cli import cli


def invoke(*args):
    """Run `edgekit ARGS...` in-process, progress lines silenced (EDGEKIT_QUIET=1)."""
    return CliRunner().invoke(
        cli, [str(a) for a in args], catch_exceptions=False, env={"EDGEKIT_QUIET": "1"}
    )


def one_line_error(result) -> str:
    """The error of a run that must fail with exit 2 and exactly one `error: ...` line on stderr."""
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err
