"""Tables for people from the `bench` and `eval` reports (the JSON reports are the source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.bench.machine import machine_line


def _ms(v: float | None) -> float | None:
    return None if v is None else float(v)


def bench_tables(report: dict[str, Any]) -> None:
    """A metrics x models table, the comparison table (several models) and the machine line."""
    import click

    from edgekit.ui import render_table

    models = report["models"]
    if any(m.get("instructions") for m in models):
        device_bench_tables(report)
        return
    names = _unique([m["name"] for m in models])
    batch = report["settings"]["batch"]

    def row(label: str, values: list[Any]) -> dict[str, Any]:
        return {"metric": label, **dict(zip(names, values, strict=True))}

    lat = [m["latency_ms"] for m in models]
    rows = [
        row("runtime", [f"{m['runtime']} {m['runtime_version']}" for m in models]),
        row("target / threads", [f"{m['target']} / {m['threads']}" for m in models]),
        row(
            "delegate / provider",
            [m.get("delegate") or m.get("provider") or m.get("accelerator") for m in models],
        ),
        row("fallback", [m.get("fallback") or "none" for m in models]),
        row("load / init (ms)", [_ms(m["load_ms"]) for m in models]),
        row("first inference (ms)", [_ms(m["first_inference_ms"]) for m in models]),
    ]
    for key, label in (
        ("mean", "mean (ms)"),
        ("std", "std (ms)"),
        ("min", "min (ms)"),
        ("p50", "p50 (ms)"),
        ("p90", "p90 (ms)"),
        ("p95", "p95 (ms)"),
        ("p99", "p99 (ms)"),
        ("max", "max (ms)"),
    ):
        rows.append(row(label, [_ms(s[key]) for s in lat]))
    rows.append(row("cv", [None if s["cv"] is None else f"{s['cv']:.1%}" for s in lat]))
    rows.append(row("runs counted", [s["count"] for s in lat]))
    if batch > 1:
        rows.append(row(f"throughput (items/s, batch {batch})", [s["throughput"] for s in lat]))
    rows.append(row("peak RSS (MiB)", [m["peak_rss_mb"] for m in models]))
    rows.append(row("RSS increase over baseline (MiB)", [m["rss_increase_mb"] for m in models]))
    rows.append(row("figures", [m.get("source", "measured on this machine") for m in models]))
    if report.get("device"):
        rows += [row(label, vals) for label, vals in static_rows(models, report["device"])]
    render_table(rows, ["metric", *names], title="edgekit bench")
    _findings(models)
    cmp = report.get("comparison")
    if cmp:
        pct = round(cmp["confidence"] * 100)
        crow = [
            {
                "model": n,
                "p50 (ms)": r["p50_ms"],
                "p50 ratio to first": f"{r['ratio']:.3f}",
                f"{pct}% CI": f"{r['ci_low']:.3f} - {r['ci_high']:.3f}",
                "differs": "yes" if r["significant"] else "no",
            }
            for n, r in zip(names, cmp["rows"], strict=True)
        ]
        render_table(crow, title="Interleaved comparison (A B A B ...)")
        click.echo(f"CI: {cmp['method']}.")
    if report.get("comparison_note"):
        click.echo(report["comparison_note"])
    s = report["settings"]
    plan = f"{s['min_seconds']} s of runs" if s["min_seconds"] else f"{s['runs']} runs"
    where = report.get("source", "measured on this machine")
    device = report["machine"].get("device")
    machine = (
        f"{device}, {machine_line(report['machine'])}"
        if device
        else machine_line(report["machine"])
    )
    click.echo(
        f"Machine: {machine} ({where}). Warm-up {s['warmup']} runs / "
        f"{s['warmup_seconds']} s, then {plan}; {s['clock']}."
    )


def eval_tables(result: dict[str, Any], *, max_classes: int = 20) -> None:
    """Summary, per-class accuracy and (for up to max_classes classes) the confusion matrix."""
    import click

    from edgekit.ui import render_table

    ref = result.get("reference")
    k = result["k"]
    summary = [
        {"metric": "model", "value": f"{result['name']} ({result['runtime']}, {result['target']})"},
        {"metric": "data", "value": f"{result['data']['name']} ({result['count']} images)"},
        {"metric": "top-1 accuracy", "value": _pct(result["top1"])},
        {"metric": f"top-{k} accuracy", "value": _pct(result["topk"])},
    ]
    if ref:
        summary += [
            {"metric": "reference", "value": Path(result["reference_model"]).name},
            {"metric": "reference top-1", "value": _pct(ref["reference_top1"])},
            {"metric": "top-1 drop vs reference", "value": _pct(ref["top1_drop"], signed=True)},
            {"metric": "top-1 agreement", "value": _pct(ref["top1_agreement"])},
            {"metric": "mean KL(reference || model)", "value": f"{ref['mean_kl']:.4g} nats"},
        ]
    num = result.get("numerics")
    if num:
        summary += [
            {"metric": "arm64 vs x86: max abs output diff", "value": f"{num['max_abs_diff']:.3g}"},
            {"metric": "arm64 vs x86: top-1 agreement", "value": _pct(num["top1_agreement"])},
            {
                "metric": "arm64 vs x86: changed predictions",
                "value": f"{num['changed_predictions']} of {num['count']}",
            },
        ]
        if num.get("x86_top1") is not None:
            summary.append({"metric": "top-1 accuracy on x86", "value": _pct(num["x86_top1"])})
    if result.get("static"):
        summary += [
            {"metric": label, "value": vals[0]}
            for label, vals in static_rows([result], result.get("device") or {})
        ]
    render_table(summary, title="edgekit eval")
    if result.get("static"):
        _findings([result])
    if result.get("note"):
        click.echo(result["note"])
    if result.get("per_class"):
        rows = [
            {
                "class": c["label"],
                "images": c["count"],
                "correct": c["correct"],
                "accuracy": _pct(c["accuracy"]),
            }
            for c in result["per_class"]
        ]
        render_table(rows, title="Per-class accuracy")
        if result["num_classes"] <= max_classes:
            labels = result["labels"]
            cm_rows = [
                {"true \\ predicted": labels[i], **dict(zip(labels, r, strict=True))}
                for i, r in enumerate(result["confusion_matrix"])
            ]
            render_table(cm_rows, title="Confusion matrix")
        else:
            click.echo("Confusion matrix: in --json (too many classes for a table).")
    p = result["preprocessing"]
    click.echo(f"Preprocessing: (pixels - {p['mean']}) / {p['std']}; batch {result['batch_size']}.")


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:+.2f} points" if signed else f"{v * 100:.2f}%"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} #{seen[n]}")
    return out


def static_tables(result: dict[str, Any], *, top: int = 10) -> None:
    """Tables for `edgekit.targets.emulated.static.analyze`: totals and peak memory, the top ops by
    MACs, delegate fallbacks and findings."""
    import click

    from edgekit.ui import render_table

    t = result["totals"]
    peak = result["peak_activation"]
    rows = [
        {"metric": "model", "value": f"{Path(result['path']).name} ({result['precision']})"},
        {"metric": "file size", "value": _bytes(t["file_size_bytes"])},
        {"metric": "weights (constant buffers)", "value": _bytes(t["weights_bytes"])},
        {"metric": "ops", "value": t["ops"]},
        {"metric": "MACs", "value": t["macs"]},
        {"metric": "other element operations", "value": t["elementwise_ops"]},
        {"metric": "bytes moved (sum over ops)", "value": _bytes(t["bytes_moved"])},
        {
            "metric": "peak activation memory",
            "value": f"{_bytes(peak['bytes'])} at op {peak['op_index']} ({peak['op']})",
        },
    ]
    render_table(rows, ["metric", "value"], title="edgekit static analysis")
    ops = sorted(result["ops"], key=lambda o: (-o["macs"], o["index"]))[:top]
    ops = [o for o in ops if o["macs"]]
    if ops:
        total = t["macs"] or 1
        render_table(
            [
                {
                    "#": o["index"],
                    "op": o["op"],
                    "output": "x".join(str(d) for d in o["outputs"][0]["shape"])
                    if o["outputs"]
                    else "-",
                    "precision": o["precision"],
                    "MACs": o["macs"],
                    "share": f"{o['macs'] / total:.1%}",
                    "bytes moved": _bytes(o["bytes_moved"]),
                }
                for o in ops
            ],
            title=f"Top {len(ops)} ops by MACs",
        )
    drows = []
    for name, d in result["delegates"].items():
        fb = d.get("fallback_ops", [])
        reasons = sorted({result["ops"][i]["delegates"][name]["reason"] or "?" for i in fb})
        checked = "yes" if d.get("checked_against_runtime") else "no"
        drows.append(
            {
                "delegate": name,
                "ops on the CPU": f"{len(fb)} of {t['ops']}",
                "why": "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else "") or "-",
                "checked on a runtime": checked,
            }
        )
    render_table(drows, title="Delegate support")
    for f in result["findings"]:
        click.echo(f"{f['level']}: {f['message']} [{f['code']}]")
    click.echo(f"Peak memory: {peak['note']}")


def _bytes(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{int(n)} B"


def static_rows(models: list[dict[str, Any]], device: dict[str, Any]) -> list[tuple[str, list]]:
    """(label, one value per model) rows of the static analysis in bench/eval reports."""

    def col(fn: Any) -> list[Any]:
        return [fn(m["static"]) if m.get("static") else "-" for m in models]

    rows = [
        ("precision", col(lambda a: a["precision"])),
        ("MACs (static)", col(lambda a: f"{a['totals']['macs']:,}")),
        ("weights (static)", col(lambda a: _bytes(a["totals"]["weights_bytes"]))),
        ("peak activation memory (static)", col(lambda a: _bytes(a["peak_activation"]["bytes"]))),
    ]
    for acc in device.get("accelerators") or []:

        def fallback(a: dict[str, Any], acc: str = acc) -> str:
            fb = a["delegates"].get(acc, {}).get("fallback_ops", [])
            if not fb:
                return "none"
            kinds = sorted({a["ops"][i]["op"] for i in fb})
            return f"{len(fb)} op(s): {', '.join(kinds[:4])}{' ...' if len(kinds) > 4 else ''}"

        rows.append((f"{acc} fallback (static)", col(fallback)))
    rows.append(
        (
            "findings (static)",
            col(
                lambda a: (
                    ", ".join(f["code"] for f in a["findings"] if f["level"] != "info") or "none"
                )
            ),
        )
    )
    return rows


def _findings(models: list[dict[str, Any]]) -> None:
    import click

    for m in models:
        for f in (m.get("static") or {}).get("findings", []):
            if f["level"] != "info":
                click.echo(f"{f['level']}: {m['name']}: {f['message']} [{f['code']}]")


def estimate_text(e: dict[str, Any]) -> str:
    """'≈ 3.1 ms ±30% (estimate)' or 'uncalibrated'."""
    if not e.get("calibrated") or e.get("ms") is None:
        return "uncalibrated (no ms)"
    err = e.get("expected_error")
    spread = f" ±{err:.0%}" if err is not None else ""
    return f"≈ {e['ms']:.3g} ms{spread} (estimate)"


def device_bench_tables(report: dict[str, Any]) -> None:
    """The bench table of an emulated device target: static totals, counted instructions, the
    estimate, and the emulated time labelled as such."""
    import click

    from edgekit.ui import render_table

    models = report["models"]
    names = _unique([m["name"] for m in models])
    dev = report["device"]

    def row(label: str, values: list[Any]) -> dict[str, Any]:
        return {"metric": label, **dict(zip(names, values, strict=True))}

    rows = [
        row("runtime", [f"{m['runtime']} {m['runtime_version']} (aarch64)" for m in models]),
        row("target / threads", [f"{m['target']} / {m['threads']}" for m in models]),
        row("delegate", [m.get("delegate") for m in models]),
        row("fallback (runtime)", [m.get("fallback") or "none" for m in models]),
    ]
    rows += [row(label, vals) for label, vals in static_rows(models, dev)]
    ins = [m["instructions"] for m in models]
    rows.append(
        row(
            "instructions / invoke (median)",
            [f"{c['median']:,.0f} (spread {c['spread']:.1%}, {c['runs']} runs)" for c in ins],
        )
    )
    width = max(len(m["estimate"]["by_threads"]) for m in models)
    for k in range(width):
        t = models[0]["estimate"]["by_threads"][
            min(k, len(models[0]["estimate"]["by_threads"]) - 1)
        ]
        rows.append(
            row(
                f"latency estimate, {t['threads']} thread{'s' if t['threads'] > 1 else ''}",
                [estimate_text(m["estimate"]["by_threads"][k]) for m in models],
            )
        )
    rows.append(
        row(
            "emulated time p50 (ms, NOT a latency)",
            [f"{m['emulated_ms']['p50']:.3g}" for m in models],
        )
    )
    rows.append(row("figures", ["static / emulated / estimated" for _ in models]))
    render_table(rows, ["metric", *names], title=f"edgekit bench: {dev['title']} (emulated)")
    _findings(models)
    cmp = report.get("comparison")
    if cmp:
        render_table(
            [
                {
                    "model": n,
                    "instructions / invoke": f"{r['instructions']:,.0f}",
                    "ratio to first": f"{r['ratio']:.3f}" if r["ratio"] is not None else "-",
                    "count spread": f"{r['spread']:.1%}",
                }
                for n, r in zip(names, cmp["rows"], strict=True)
            ],
            title="Comparison by counted instructions (exact; no sampling interval)",
        )
    e = models[0]["estimate"]
    if e["calibrated"]:
        click.echo(f"Estimate: {e['formula']}; expected error ±{e['expected_error']:.0%}.")
    else:
        click.echo(
            f"Estimate: uncalibrated: {dev['name']} has no fitted constants yet, so only the "
            "instruction counts are reported (edgekit devices show NAME)."
        )
    s = report["settings"]
    click.echo(
        f"Emulated: {dev['title']} as {s['qemu_cpu']} under QEMU on {report['machine']['hostname']}"
        f"; warm-up {s['warmup']}, then {s['runs']} counted runs. Emulated time is QEMU wall "
        "time, not a latency."
    )
