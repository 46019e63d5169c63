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
    render_table(rows, ["metric", *names], title="edgekit bench")
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
    render_table(summary, title="edgekit eval")
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
    """Tables for `edgekit.emulation.static.analyze`: totals and peak memory, the top ops by
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
