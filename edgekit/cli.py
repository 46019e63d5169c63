"""Command line: parse options, call one library function from edgekit.api, render the result.

Errors from the library are EdgekitError subclasses; they are printed on one line with the exit
code the class names (2: bad input, 1: a failed stage, a regression or a missed budget).
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EdgekitError


def emit_json(obj: Any) -> None:
    from edgekit.artifacts import _json_default

    click.echo(json.dumps(obj, indent=2, default=_json_default))


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)


class EdgekitGroup(click.Group):
    """Maps edgekit errors to one line on stderr and the error's exit code (also under CliRunner)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            click.echo(f"error: {_one_line(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo(
                "Interrupted; completed stages are kept and a re-run resumes from them.", err=True
            )
            ctx.exit(130)
        except Exception as e:  # an edgekit bug, not bad input: say so without a wall of text
            if os.environ.get("EDGEKIT_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {_one_line(str(e))} "
                "(this is a bug in edgekit; re-run with EDGEKIT_DEBUG=1 for the traceback and report it)",
                err=True,
            )
            ctx.exit(1)


@click.group(
    cls=EdgekitGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="edgekit")
def cli() -> None:
    """Take a trained Keras model to the edge: compress, export, benchmark, evaluate and gate it."""


@cli.command()
@click.argument("model", required=False, type=click.Path())
@click.option(
    "--recipe",
    "-r",
    default="distill",
    show_default=True,
    help="Bundled recipe name or a YAML path.",
)
@click.option(
    "--data", "-d", help="digits, shapes, shapes:SIZE, an image folder, a .npz or a .tfrecord."
)
@click.option(
    "--out", "-o", type=click.Path(), help="Run folder (default runs/<recipe>-<timestamp>)."
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe field."
)
@click.option(
    "--unsafe", is_flag=True, help="Allow Lambda layers / custom objects (trusted files only)."
)
@click.option(
    "--no-latency", is_flag=True, help="Skip the p50 latency measurement of each artifact."
)
@json_option
def compress(model, recipe, data, out, overrides, unsafe, no_latency, as_json):
    """Prune, distill, quantize and export a model with a recipe; verify every export."""
    from edgekit import api

    report = api.compress(
        model,
        recipe=recipe,
        data=data,
        out=out,
        overrides=list(overrides),
        unsafe=unsafe,
        measure_latency=not no_latency,
    )
    if as_json:
        emit_json(report)
        return
    from edgekit.report.markdown import table_rows
    from edgekit.ui import render_table

    render_table(table_rows(report), title=f"edgekit compress: recipe {report['recipe']}")
    click.echo(f"Final artifact: {report['final_artifact']}")


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def recipes(ctx, as_json):
    """List the bundled recipes (`recipes show NAME` prints one)."""
    if ctx.invoked_subcommand:
        return
    from edgekit import api

    rows = api.list_recipes()
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<10} {' -> '.join(r['stages']):<32} {r['description']}")


@recipes.command("show")
@click.argument("name")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Show with overrides applied."
)
@json_option
def recipes_show(name, overrides, as_json):
    """Print one recipe, resolved, with every default filled in."""
    from edgekit import api

    resolved = api.show_recipe(name, list(overrides))
    if as_json:
        emit_json(resolved)
        return
    import yaml

    click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="edgekit")


def _one_line(s: str) -> str:
    return " ".join(s.split()) or "(no message)"


if __name__ == "__main__":
    main()
