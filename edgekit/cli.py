"""Command line: parse options, call one library function from edgekit.api, render the result.

Errors from the library are EdgekitError subclasses; they are printed on one line with the exit
code the class names (2: bad input, 1: a failed stage, a regression or a missed budget).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.plans import DELEGATES, GRAPH_OPTIMIZATIONS, LATENCY_METRICS


def emit_json(obj: Any) -> None:
    from edgekit.artifacts import _json_default

    click.echo(json.dumps(obj, indent=2, default=_json_default))


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)
html_option = click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Also write the result as one self-contained HTML page with plots (opens offline).",
)


def write_html_page(report: dict[str, Any], path: str, kind: str) -> None:
    from edgekit import api

    written = api.report_html(report, path, kind=kind)
    click.echo(f"Wrote {written}", err=True)


class Choice(click.Choice):
    """click.Choice whose refusal is edgekit's one-line error (exit 2)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            from edgekit.errors import UsageError

            raise UsageError(
                f"{param.opts[0]} must be one of {', '.join(self.choices)}. Received: {value!r}"
            ) from None


class EdgekitGroup(click.Group):
    """Maps edgekit errors to one line on stderr and the error's exit code (also under CliRunner).

    An interrupt (Ctrl-C, SIGTERM under `main()`) prints one line saying what was running and
    exits 128 + the signal (130 / 143); a full disk is one line and exit 2."""

    group_class = type  # subgroups (devices, recipes, baseline) are EdgekitGroups too

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name:  # the command words, for the interrupt line ("devices setup")
            ctx.meta.setdefault("edgekit.command", []).append(name)
        return name, cmd, rest

    def invoke(self, ctx: click.Context) -> Any:
        from edgekit.ui import pending_signal

        try:
            result = super().invoke(ctx)
        except EdgekitError as e:
            if pending_signal() is not None:  # e.g. an import cut short became "not installed"
                _exit_interrupted(ctx, pending_signal())
            from edgekit.artifacts import disk_full_from

            e = disk_full_from(e) or e  # a full disk under a stage's error: say that
            click.echo(f"error: {_one_line(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as e:
            _exit_interrupted(ctx, getattr(e, "signum", signal.SIGINT))
        except Exception as e:  # an edgekit bug, not bad input: say so without a wall of text
            if pending_signal() is not None:  # a library turned the interrupt into its own error
                _exit_interrupted(ctx, pending_signal())
            from edgekit.artifacts import disk_full_from

            full = disk_full_from(e)
            if full is not None:
                click.echo(f"error: {_one_line(str(full))}", err=True)
                ctx.exit(full.exit_code)
            if os.environ.get("EDGEKIT_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {_one_line(str(e))} "
                "(this is a bug in edgekit; re-run with EDGEKIT_DEBUG=1 for the traceback and report it)",
                err=True,
            )
            ctx.exit(1)
        if pending_signal() is not None:  # the interrupt was swallowed on its way (a __del__)
            _exit_interrupted(ctx, pending_signal())
        return result


# What a rerun does after an interrupt, per command (default: nothing half-written was left).
_RERUN = {
    "compress": "rerun the same command to resume (finished stages are kept)",
    "setup": "rerun the same command to continue (finished parts are kept)",
}


def _exit_interrupted(ctx: click.Context, signum: int) -> None:
    from edgekit import ui

    words = ctx.meta.get("edgekit.command", [])
    what = ui.interrupted_activity() or " ".join(["edgekit", *words])
    rerun = _RERUN.get(
        words[-1] if words else "", "nothing is half-written; rerun the same command"
    )
    by = " by SIGTERM" if signum == signal.SIGTERM else ""
    click.echo(f"interrupted{by} during {what}; {rerun}", err=True)
    ctx.exit(128 + int(signum))


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT / SIGTERM: raise Interrupted in the main thread; `finally` blocks clean up."""
    from edgekit import ui
    from edgekit.errors import Interrupted

    if ui.pending_signal() is None:
        ui.signal_received(signum)
        ui.note_interrupt()
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Make SIGTERM (and SIGINT) raise edgekit's Interrupted, as Ctrl-C raises KeyboardInterrupt."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


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
    "--data",
    "-d",
    help="digits, shapes, shapes:SIZE, fashion-mnist, an image folder (or a folder of IDX "
    "files), a .npz or a .tfrecord.",
)
@click.option(
    "--unlabeled",
    "-u",
    metavar="DATA",
    help="Extra images without labels (any --data form; labels in it are ignored) that "
    "distillation teaches with the teacher's outputs alone. The bundled example brings its own "
    "pool; 'none' leaves it out.",
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
@click.option(
    "--output",
    "class_output",
    help="Multi-output teachers: the output (name or index) holding the class scores "
    "[default: the first]. Every output is verified.",
)
@json_option
def compress(
    model, recipe, data, unlabeled, out, overrides, unsafe, no_latency, class_output, as_json
):
    """Compress a model with a recipe; verify every export.

    Prunes, distills into a MobileNet student, quantizes and exports to TFLite and ONNX, as the
    recipe says; writes a run folder with every artifact, report.json, report.md and
    report.html (one page with plots that opens offline).
    """
    from edgekit import api

    report = api.compress(
        model,
        recipe=recipe,
        data=data,
        unlabeled=unlabeled,
        out=out,
        overrides=list(overrides),
        unsafe=unsafe,
        measure_latency=not no_latency,
        output=class_output,
    )
    if as_json:
        emit_json(report)
        return
    if report.get("role") == "worker":  # a multi_worker task other than the chief: no report
        click.echo(f"{report['task']}: done; the chief's run folder holds the report")
        return
    from edgekit.report.markdown import table_rows
    from edgekit.ui import render_table

    render_table(table_rows(report), title=f"edgekit compress: recipe {report['recipe']}")
    click.echo(f"Final artifact: {report['final_artifact']}")
    page = Path(out) / "report.html" if out else None
    if page is not None and page.is_file():
        click.echo(f"Report with plots: {page} (open it in a browser)")


@cli.command("export")
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", default="tflite", show_default=True, help="tflite or onnx.")
@click.option(
    "--quantize",
    default="none",
    show_default=True,
    help="none, dynamic, float16, int8 or int16x8 (ONNX: none, dynamic, int8).",
)
@click.option(
    "--data", "-d", help="Calibration / verification / accuracy data (digits, shapes, a folder...)."
)
@click.option("--out", "-o", type=click.Path(), help="Output file or folder.")
@click.option(
    "--android", is_flag=True, help="Add TFLite model metadata; write labels.txt and MODEL.md."
)
@click.option(
    "--io-type", default="float32", show_default=True, help="int8 / uint8 I/O (--quantize int8)."
)
@click.option("--mean", help="Preprocessing (pixels - mean) / std [default: 0].")
@click.option("--std", help="One value or one per channel [default: 255].")
@click.option(
    "--labels", type=click.Path(), help="Labels file, one per line [default: the data's]."
)
@click.option("--name", help="Metadata: model name [default: the output file's stem].")
@click.option("--description", help="Metadata: description [default: generated].")
@click.option("--model-version", default="1", show_default=True, help="Metadata: version.")
@click.option("--author", default="unknown", show_default=True, help="Metadata: author.")
@click.option(
    "--license", "license_", default="unspecified", show_default=True, help="Metadata: licence."
)
@click.option(
    "--unsafe", is_flag=True, help="Allow Lambda layers / custom objects (trusted files only)."
)
@click.option(
    "--output",
    "class_output",
    help="Multi-output models: the output (name or index) holding the class scores "
    "[default: the first]. Every output is verified.",
)
@json_option
def export_cmd(
    model,
    fmt,
    quantize,
    data,
    out,
    android,
    io_type,
    mean,
    std,
    labels,
    name,
    description,
    model_version,
    author,
    license_,
    unsafe,
    class_output,
    as_json,
):
    """Convert one model to TFLite or ONNX and verify it (no training).

    The same conversion and checks as the compress recipes. --android adds the metadata Android's
    LiteRT support library and ML Model Binding read, plus labels.txt and MODEL.md beside it.
    """
    from edgekit import api

    report = api.export(
        model,
        format=fmt,
        quantize=quantize,
        data=data,
        out=out,
        android=android,
        io_type=io_type,
        mean=None if mean is None else _floats(mean, "--mean"),
        std=None if std is None else _floats(std, "--std"),
        labels=labels,
        name=name,
        description=description,
        version=model_version,
        author=author,
        license=license_,
        unsafe=unsafe,
        output=class_output,
    )
    if as_json:
        emit_json(report)
        return
    from edgekit.export.render import export_table

    export_table(report)


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def recipes(ctx, as_json):
    """List the bundled recipes; `recipes show NAME` prints one."""
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


@cli.group(invoke_without_command=True)
@json_option
@click.pass_context
def devices(ctx, as_json):
    """List the device profiles; `devices show NAME` prints one."""
    if ctx.invoked_subcommand:
        return
    from edgekit import api

    rows = api.list_devices()
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        calibrated = {"uncalibrated": "not calibrated"}.get(r["calibration"], r["calibration"])
        click.echo(
            f"{r['name']:<13} {r['title']:<58} {r['cpu']}  "
            f"[{', '.join(r['accelerators'])}] {calibrated}"
        )


@devices.command("show")
@click.argument("name")
@json_option
def devices_show(name, as_json):
    """Print one device profile (a bundled name or a YAML path), validated, with derived values."""
    from edgekit import api

    resolved = api.show_device(name)
    if as_json:
        emit_json(resolved)
        return
    import yaml

    click.echo(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True).rstrip())


@devices.command("new")
@click.argument("name")
@click.option(
    "--cpuinfo",
    type=click.Path(),
    help="The device's /proc/cpuinfo saved to a file, or - for stdin.",
)
@click.option(
    "--device",
    "adb_device",
    metavar="adb[:SERIAL]",
    help="Read /proc/cpuinfo, the clocks and RAM over adb instead.",
)
@click.option(
    "--adb", "adb_path", type=click.Path(), help="adb: the adb executable [default: PATH]."
)
@click.option(
    "--clusters", help="The SoC's clusters fastest first, COUNTxGHZ: 1x2.84,3x2.42,4x1.8."
)
@click.option("--title", help="A title for `edgekit devices` [default: from the core class].")
@click.option("--kind", type=click.Choice(["phone", "board"]), default="phone", show_default=True)
@click.option("--core-class", help="Treat the big cores as this core class (devices/cores/).")
@click.option(
    "--ram-mb", type=click.IntRange(min=1), help="Installed RAM in MB (with a source you trust)."
)
@click.option("--out", type=click.Path(), help="Where to write the profile [default: NAME.yaml].")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@json_option
def devices_new(
    name,
    cpuinfo,
    adb_device,
    adb_path,
    clusters,
    title,
    kind,
    core_class,
    ram_mb,
    out,
    force,
    as_json,
):
    """Make a profile for your own phone or board from its /proc/cpuinfo and core clusters.

    It picks the core class of the big cores, copies the constants of that class (or of the
    nearest calibrated one) and marks the profile extrapolated, with the error band measured for
    constants carried over that way. Use it with --target NAME.yaml.
    """
    from edgekit import api

    res = api.new_device(
        name,
        cpuinfo=cpuinfo,
        device=adb_device,
        adb=adb_path,
        clusters=clusters,
        title=title,
        kind=kind,
        core_class=core_class,
        ram_mb=ram_mb,
        out=out,
        force=force,
    )
    if as_json:
        emit_json(res)
        return
    click.echo(f"wrote {res['path']}: {res['cpu']}, status extrapolated")
    src = ", ".join(res["constants_from"])
    click.echo(
        f"big cores: {res['core_class']}; constants from {src}; emulated as {res['qemu_cpu']}"
    )
    for p, basis in res["basis"].items():
        click.echo(f"  {p:<8} {basis:<12} expected error ±{res['expected_error'][p]:.0%}")
    if res["dropped_features"]:
        click.echo(f"not emulated: {', '.join(res['dropped_features'])}")
    click.echo(f"next: edgekit bench MODEL.tflite --target {res['path']}")


@devices.command("setup")
@click.option("--force", is_flag=True, help="Rebuild everything, even what is already there.")
@click.option(
    "--no-wait", is_flag=True, help="Fail at once (exit 2) if another setup holds the cache."
)
@json_option
def devices_setup(force, no_wait, as_json):
    """Provision the emulated arm64 targets once (qemu-user, an arm64 Python, aarch64 LiteRT).

    Downloads about 55 MB into edgekit's cache (EDGEKIT_CACHE, else ~/.cache/edgekit); installing
    qemu-user needs root. A second call finds everything in place and returns at once; one
    started while another runs waits for it (two CI jobs on one cache).
    """
    from edgekit import api

    result = api.setup_devices(force=force, wait=not no_wait)
    if as_json:
        emit_json(result)
        return
    click.echo(f"{result['did']} in {result['seconds']:.1f} s: {result['cache']}")


@devices.command("status")
@json_option
def devices_status(as_json):
    """Say what the emulated targets have provisioned and what is missing."""
    from edgekit import api

    st = api.devices_status()
    if as_json:
        emit_json(st)
        return
    for name, part in st["parts"].items():
        click.echo(f"{name:<8} {'ok' if part['ok'] else 'missing: ' + str(part.get('why'))}")
    click.echo("provisioned" if st["provisioned"] else f"not provisioned: run `{st['fix']}`")
    if not st["provisioned"]:
        raise SystemExit(1)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option(
    "--target",
    default="cpu",
    show_default=True,
    help="cpu, gpu, a device profile (edgekit devices; emulated), ssh://user@host[:port] (a Linux "
    "board) or adb[:SERIAL] (an Android device).",
)
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads.")
@click.option("--batch", type=int, default=1, show_default=True, help="Items per invoke.")
@click.option(
    "--warmup", type=int, help="Warm-up runs (at least) [default: 10; device profiles: 1]."
)
@click.option(
    "--warmup-seconds", type=float, help="Warm-up time (at least) [default: 0.1; profiles: 0]."
)
@click.option("--runs", type=int, help="Timed runs [default: 100; device profiles: 5].")
@click.option("--min-seconds", type=float, help="Time runs for this long instead of --runs.")
@click.option("--no-xnnpack", is_flag=True, help="LiteRT: builtin reference kernels, no XNNPACK.")
@click.option(
    "--graph-optimization",
    type=Choice(GRAPH_OPTIMIZATIONS),
    help="ONNX Runtime graph optimization [default: all].",
)
@click.option("--xla", is_flag=True, help="Keras/SavedModel: compile with XLA.")
@click.option("--samples", is_flag=True, help="With --json: include every timed run (ms).")
@click.option(
    "--remote-python", help="ssh: the Python on the board (numpy + LiteRT) [default: python3]."
)
@click.option("--ssh-key", type=click.Path(), help="ssh: private key file.")
@click.option("--known-hosts", type=click.Path(), help="ssh: known_hosts file to use.")
@click.option("--connect-timeout", type=int, help="ssh: seconds to wait for a connection [10].")
@click.option(
    "--benchmark-binary",
    help="adb: benchmark_model to push (local file) or run (device path) [default: found there].",
)
@click.option("--delegate", type=Choice(DELEGATES), help="adb: the delegate [default: xnnpack].")
@click.option("--taskset", help="adb: CPU affinity mask in hex for big cores, e.g. f0.")
@click.option(
    "--adb", "adb_path", type=click.Path(), help="adb: the adb executable [default: PATH]."
)
@click.option(
    "--ignore-limits",
    is_flag=True,
    help="Device profiles: run even when static analysis finds an error (e.g. over memory).",
)
@html_option
@json_option
def bench(
    models,
    target,
    threads,
    batch,
    warmup,
    warmup_seconds,
    runs,
    min_seconds,
    no_xnnpack,
    graph_optimization,
    xla,
    samples,
    remote_python,
    ssh_key,
    known_hosts,
    connect_timeout,
    benchmark_binary,
    delegate,
    taskset,
    adb_path,
    ignore_limits,
    html_path,
    as_json,
):
    """Measure latency and memory of models, here or on a device.

    Several models are measured interleaved (A B A B ...) and compared by their p50 ratio.
    --target ssh://user@host runs edgekit's runner on a Linux board (numpy + LiteRT there);
    --target adb[:SERIAL] runs LiteRT's benchmark_model on an Android device; --target PROFILE
    (e.g. pixel-4) analyses the model for that device, runs it on an emulated arm64 core and
    estimates its latency there from counted instructions (`edgekit devices setup` once first).
    """
    from edgekit import api
    from edgekit.errors import UsageError

    if runs is not None and min_seconds is not None:
        raise UsageError("Pass either --runs or --min-seconds, not both.")
    report = api.bench(
        list(models),
        target=target,
        threads=threads,
        batch=batch,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        runs=runs,
        min_seconds=min_seconds,
        xnnpack=not no_xnnpack,
        samples=samples or html_path is not None,  # the page draws every timed run
        graph_optimization=graph_optimization,
        xla=xla,
        delegate=delegate,
        taskset=taskset,
        remote_python=remote_python,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        connect_timeout=connect_timeout,
        benchmark_binary=benchmark_binary,
        adb=adb_path,
        ignore_limits=ignore_limits,
    )
    if html_path:
        write_html_page(report, html_path, "bench")
        if not samples:
            for m in report.get("models") or []:
                (m.get("latency_ms") or {}).pop("samples_ms", None)
    if as_json:
        emit_json(report)
        return
    from edgekit.report.bench import bench_tables

    bench_tables(report)


def _floats(text: str, option: str) -> float | tuple[float, ...]:
    from edgekit.errors import UsageError

    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(
            f"{option} takes a number or one number per channel (e.g. 0.5,0.5,0.5). "
            f"Received: {text!r}"
        ) from None
    return vals[0] if len(vals) == 1 else vals


@cli.command("eval")
@click.argument("model", type=click.Path())
@click.option(
    "--data", "-d", required=True, help="digits, shapes:SIZE, an image folder, a .npz, a .tfrecord."
)
@click.option("--reference", type=click.Path(), help="Compare with this model (agreement, KL).")
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--mean", default="0", show_default=True, help="Preprocessing: (pixels - mean) / std."
)
@click.option("--std", default="255", show_default=True, help="One value or one per channel.")
@click.option(
    "--target",
    default="cpu",
    show_default=True,
    help="cpu, gpu, a device profile (edgekit devices; emulated arm64) or ssh://user@host[:port].",
)
@click.option("--threads", type=int, help="CPU threads [default: all cores; device profiles: 1].")
@click.option("--output", help="Output (name or index) holding the class scores.")
@click.option("--limit", type=int, help="Evaluate the first N images only.")
@click.option("--remote-python", help="ssh: the Python on the board [default: python3].")
@click.option("--ssh-key", type=click.Path(), help="ssh: private key file.")
@click.option("--known-hosts", type=click.Path(), help="ssh: known_hosts file to use.")
@click.option(
    "--ignore-limits",
    is_flag=True,
    help="Device profiles: run even when static analysis finds an error (e.g. over memory).",
)
@html_option
@json_option
def eval_cmd(
    model,
    data,
    reference,
    top_k,
    batch_size,
    mean,
    std,
    target,
    threads,
    output,
    limit,
    remote_python,
    ssh_key,
    known_hosts,
    ignore_limits,
    html_path,
    as_json,
):
    """Measure accuracy on a data set, optionally against a reference.

    Top-1/top-k and per-class accuracy, the confusion matrix, and against --reference the top-1
    agreement and mean KL divergence.
    """
    from edgekit import api

    result = api.evaluate(
        model,
        data,
        reference=reference,
        top_k=top_k,
        batch_size=batch_size,
        mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"),
        target=target,
        threads=threads,
        output=output,
        limit=limit,
        remote_python=remote_python,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        ignore_limits=ignore_limits,
    )
    if html_path:
        write_html_page(result, html_path, "eval")
    if as_json:
        emit_json(result)
        return
    from edgekit.report.bench import eval_tables

    eval_tables(result)


@cli.group()
def baseline():
    """Create the baseline that `edgekit check` compares with."""


@baseline.command("create")
@click.argument("model", type=click.Path())
@click.option(
    "--data", "-d", required=True, help="digits, shapes:SIZE, an image folder, a .npz, a .tfrecord."
)
@click.option(
    "--out", "-o", default="baseline.json", show_default=True, type=click.Path(),
    help="Baseline file to write.",
)  # fmt: skip
@click.option(
    "--reference", type=click.Path(),
    help="Latency reference model [default: edgekit's bundled reference network].",
)  # fmt: skip
@click.option("--top-k", type=int, default=5, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--mean", default="0", show_default=True, help="Preprocessing: (pixels - mean) / std."
)
@click.option("--std", default="255", show_default=True, help="One value or one per channel.")
@click.option("--threads", type=int, help="CPU threads for evaluation [default: all cores].")
@click.option("--output", help="Output (name or index) holding the class scores.")
@click.option("--limit", type=int, help="Use the first N images only (checks do the same).")
@click.option("--no-latency", is_flag=True, help="Store no latency (checks skip it).")
@click.option(
    "--latency-seconds", type=float, default=3.0, show_default=True, help="Timed seconds."
)
@click.option(
    "--latency-threads", type=int, default=1, show_default=True,
    help="Threads when timing or counting.",
)  # fmt: skip
@click.option(
    "--latency-metric", type=Choice(LATENCY_METRICS), default="time",
    show_default=True,
    help="time: CPU time vs a reference network; instructions: counted on --target (.tflite).",
)  # fmt: skip
@click.option("--target", help="Emulated device for --latency-metric instructions, e.g. pixel-4.")
@json_option
def baseline_create(
    model, data, out, reference, top_k, batch_size, mean, std, threads, output, limit,
    no_latency, latency_seconds, latency_threads, latency_metric, target, as_json,
):  # fmt: skip
    """Evaluate MODEL on DATA and store what later checks need.

    Accuracy (top-1, top-k, per class), every image's top-1 prediction and correctness, the data
    and model fingerprints, runtime versions, and the latency: as a ratio to a reference network
    timed in the same process, or (--latency-metric instructions --target DEVICE) as
    instructions per invoke on an emulated device.
    """
    from edgekit import api

    doc = api.create_baseline(
        model,
        data,
        out,
        reference=reference,
        top_k=top_k,
        batch_size=batch_size,
        mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"),
        threads=threads,
        output=output,
        limit=limit,
        latency=not no_latency,
        latency_seconds=latency_seconds,
        latency_threads=latency_threads,
        latency_metric=latency_metric,
        target=target,
    )
    from edgekit.check.baseline import summary

    info = summary(doc, out)
    if as_json:
        emit_json(info)
        return
    from edgekit.report.check import baseline_rows
    from edgekit.ui import render_table

    render_table(baseline_rows(info), title=f"edgekit baseline: {out}")
    click.echo(f"Wrote {out}")


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--baseline", "-b", "baseline_path", type=click.Path(), help="Baseline file.")
@click.option("--data", "-d", help="Evaluation data [default: the baseline's].")
@click.option("--max-accuracy-drop", type=float, help="Allowed top-1 drop, points [1.0].")
@click.option("--max-class-drop", type=float, help="Allowed drop of any class, points [off].")
@click.option("--max-latency-increase", type=float, help="Allowed latency increase, % [10].")
@click.option("--significance", type=float, help="Level of the tests [0.05].")
@click.option("--no-latency", is_flag=True, default=None, help="Skip the latency criterion.")
@click.option("--latency-seconds", type=float, help="Timed seconds [the baseline's].")
@click.option("--reference", type=click.Path(), help="Where the baseline's latency reference is.")
@click.option("--mean", help="Preprocessing mean [the baseline's].")
@click.option("--std", help="Preprocessing std [the baseline's].")
@click.option("--batch-size", type=int, help="Evaluation batch [the baseline's].")
@click.option("--threads", type=int, help="CPU threads for evaluation [default: all cores].")
@click.option("--output", help="Output (name or index) holding the class scores.")
@click.option(
    "--config", type=click.Path(),
    help="edgekit.yaml or pyproject.toml [default: found from the working directory].",
)  # fmt: skip
@click.option("--no-config", is_flag=True, help="Read no config file.")
@click.option("--junit", type=click.Path(), help="Write JUnit XML (one test case per criterion).")
@click.option(
    "--latency-metric", type=Choice(LATENCY_METRICS),
    help="Must match the baseline's [the baseline's].",
)  # fmt: skip
@click.option("--target", help="Emulated device of an instructions baseline [the baseline's].")
@html_option
@json_option
def check(
    model, baseline_path, data, max_accuracy_drop, max_class_drop, max_latency_increase,
    significance, no_latency, latency_seconds, reference, mean, std, batch_size, threads,
    output, config, no_config, junit, latency_metric, target, html_path, as_json,
):  # fmt: skip
    """Compare MODEL with a baseline; fail CI on a regression.

    Exit 0: pass (warnings may be printed); 1: a regression; 2: no check could be made.
    Accuracy drops fail when beyond --max-accuracy-drop AND significant (exact McNemar test on
    the paired predictions); latency (CPU time per invoke as a ratio to a reference network timed
    alongside) fails when the whole confidence interval of the increase lies beyond
    --max-latency-increase; with an instructions baseline, when the instructions per invoke on
    the emulated device grew by more than it. Thresholds may live in
    edgekit.yaml or [tool.edgekit.check] in pyproject.toml. With $GITHUB_STEP_SUMMARY set, a
    markdown summary is appended to it.
    """
    from edgekit import api
    from edgekit.errors import RegressionFound, UsageError

    if config and no_config:
        raise UsageError("Pass either --config FILE or --no-config, not both.")
    report = api.check(
        model,
        baseline_path,
        data=data,
        max_accuracy_drop=max_accuracy_drop,
        max_class_drop=max_class_drop,
        max_latency_increase=max_latency_increase,
        significance=significance,
        latency=False if no_latency else None,
        latency_seconds=latency_seconds,
        reference=reference,
        mean=None if mean is None else _floats(mean, "--mean"),
        std=None if std is None else _floats(std, "--std"),
        batch_size=batch_size,
        threads=threads,
        output=output,
        config=False if no_config else config,
        junit=junit,
        latency_metric=latency_metric,
        target=target,
    )
    if html_path:  # a failed check too: the page shows why
        write_html_page(report, html_path, "check")
    if as_json:
        emit_json(report)
    else:
        from edgekit.report.check import print_table

        print_table(report)
    if report["verdict"] == "fail":
        failed = [
            f"{c['title']}: {c['summary']}" for c in report["criteria"] if c["status"] == "fail"
        ]
        raise RegressionFound("regression in " + "; ".join(failed))


def _number(value: str | None, option: str) -> float | None:
    from edgekit.errors import UsageError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{option} must be a number. Received: {value!r}") from None


@cli.command()
@click.argument("model", type=click.Path())
@click.option("--data", required=True, help="Data set: built-in name, image folder, .npz, ...")
@click.option(
    "--max-accuracy-drop",
    default="1.0",
    show_default=True,
    help="Points of top-1 the chosen model may lose against the Keras model.",
)
@click.option("--max-latency-ms", help="Latency budget (ms; p50 here, or the device estimate).")
@click.option("--max-size-mb", help="Size budget of the .tflite (MB).")
@click.option(
    "--target",
    default="cpu",
    show_default=True,
    help="cpu (interleaved LiteRT here) or an emulated device profile (instructions per invoke).",
)
@click.option("--max-trials", type=int, default=30, show_default=True, help="Candidates at most.")
@click.option(
    "--modes",
    default="dynamic,float16,int8,int16x8",
    show_default=True,
    help="The converter's modes tried before the mixed-precision search.",
)
@click.option(
    "--keep",
    type=Choice(["float", "int16"]),
    default="float",
    show_default=True,
    help="What the sensitive layers kept out of int8 run in: float, or int16 activations.",
)
@click.option("--latency-seconds", type=float, default=4.0, show_default=True, help="cpu timing.")
@click.option("--eval-samples", type=int, help="Evaluate on this many eval images [default: all].")
@click.option("--out", "-o", type=click.Path(), help="Run folder [default: ./tune-MODEL].")
@click.option("--unsafe", is_flag=True, help="Allow Lambda layers (runs code in the model file).")
@html_option
@json_option
def tune(
    model, data, max_accuracy_drop, max_latency_ms, max_size_mb, target, max_trials, modes,
    keep, latency_seconds, eval_samples, out, unsafe, html_path, as_json,
):  # fmt: skip
    """Find the fastest quantization of MODEL inside a budget.

    Tries the converter's modes, then full int8 with the most sensitive Keras layers kept in higher
    precision, one more per trial; prints the candidates, the Pareto front, the sensitivity of each
    layer and the chosen model. Exits 1 (front shown) when nothing meets the budget.
    """
    from edgekit import api
    from edgekit.errors import BudgetExceeded

    report = api.tune(
        model,
        data,
        max_accuracy_drop=_number(max_accuracy_drop, "--max-accuracy-drop"),
        max_latency_ms=_number(max_latency_ms, "--max-latency-ms"),
        max_size_mb=_number(max_size_mb, "--max-size-mb"),
        target=target,
        max_trials=max_trials,
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        keep=keep,
        latency_seconds=latency_seconds,
        eval_samples=eval_samples,
        out=out,
        unsafe=unsafe,
    )
    if html_path:
        write_html_page(report, html_path, "tune")
    if as_json:
        emit_json(report)
    else:
        from edgekit.report.tune import tune_tables

        tune_tables(report)
    if report["verdict"] != "met":
        from edgekit.report.tune import budget_line

        failed = report.get("unverified") or []
        also = (
            f" ({len(failed)} inside it failed verification: {failed[0]['candidate']})"
            if failed
            else ""
        )
        raise BudgetExceeded(
            f"no candidate meets the budget ({budget_line(report)}) in "
            f"{report['trials']['used']} trials{also}; the Pareto front is in the report. Loosen "
            "the budget or raise --max-trials."
        )


@cli.command("report")
@click.argument("source", type=click.Path())
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False),
    help="Page to write [default: RUN_DIR/report.html, or the JSON file's name with .html].",
)  # fmt: skip
@json_option
def report_cmd(source, out, as_json):
    """Write the HTML page of a run, with plots, from its JSON.

    SOURCE is a compress run folder (its report.json; old folders get a page too) or a JSON file
    that bench, eval or check printed with --json.
    """
    from edgekit import api

    path = api.report_html(source, out)
    if as_json:
        emit_json({"html": str(path), "source": str(source)})
        return
    click.echo(f"Wrote {path}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    install_signal_handlers()
    cli.main(args=argv, prog_name="edgekit")


def _one_line(s: str) -> str:
    return " ".join(s.split()) or "(no message)"


if __name__ == "__main__":
    main()
