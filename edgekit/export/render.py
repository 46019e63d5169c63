"""The table `edgekit export` prints (the JSON report is the source)."""

from __future__ import annotations

from typing import Any


def export_table(report: dict[str, Any]) -> None:
    """One row per figure, each saying where it came from."""
    import click

    from edgekit.ui import render_table

    v = report.get("verification") or {}
    if v.get("passed") and v.get("criterion") == "max_abs_error":
        verdict = (
            f"passed: max abs error {v['max_abs_error']:.2g} <= {v['tolerance']:g} on "
            f"{v['n_samples']} samples ({v.get('inputs', '')})"
        )
    elif v.get("passed"):
        verdict = (
            f"passed: top-1 agreement {v['top1_agreement']:.3f} >= {v['tolerance']:g} on "
            f"{v['n_samples']} samples ({v.get('inputs', '')})"
        )
    elif v.get("skipped"):
        verdict = f"skipped: {v['skipped']}"
    else:
        verdict = "-"
    rows = [
        {"item": "output", "value": report["output"]},
        {"item": "format / precision", "value": f"{report['format']} / {report['precision']}"},
        {"item": "size (bytes)", "value": report["size_bytes"]},
        {"item": "verification", "value": verdict},
    ]
    if report.get("route"):
        rows.append({"item": "converted by", "value": report["route"]})
    outs = v.get("outputs") or []
    if len(outs) > 1:
        rows.append(
            {
                "item": "outputs verified",
                "value": f"{', '.join(outs)} (class scores: {v.get('class_output')})",
            }
        )
    acc = report.get("accuracy")
    if acc:
        text = f"{acc['top1'] * 100:.2f}% on {acc['samples']} held-out images"
        if acc.get("reference_top1") is not None:
            text += (
                f" (source model {acc['reference_top1'] * 100:.2f}%, "
                f"agreement {acc['top1_agreement'] * 100:.2f}%)"
            )
        rows.append({"item": "top-1 accuracy", "value": f"{text}; {acc['source']}"})
    lat = report["latency"]
    rows.append(
        {
            "item": "latency p50 (ms)",
            "value": f"{lat['p50_ms']:.3f} (1 thread, batch 1, {lat['runtime']}); {lat['source']}",
        }
    )
    a = report.get("android")
    if a:
        meta = a["metadata"]
        rows += [
            {
                "item": "Android metadata",
                "value": f"{meta['name']} v{meta.get('version')}, min parser "
                f"{meta['min_parser_version']}, packed files {', '.join(a['associated_files'])}",
            },
            {"item": "labels / model card", "value": f"{a['labels_file']}, {a['model_card']}"},
        ]
    render_table(rows, ["item", "value"], title="edgekit export")
    click.echo(f"Machine for the measured figures: {lat['machine']}.")
