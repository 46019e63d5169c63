"""Render a compress report (report.json) as a readable markdown table."""

from __future__ import annotations

from typing import Any

from edgekit.ui import format_cell

COLUMNS = [
    ("artifact", "path"),
    ("format", "format"),
    ("precision", "precision"),
    ("size", "size_bytes"),
    ("x smaller", "size_ratio_to_teacher"),
    ("params", "parameters"),
    ("top-1", "accuracy"),
    ("drop (pts)", "accuracy_drop_points"),
    ("agree w/ teacher", "agreement_with_teacher"),
    ("p50 ms", "latency_ms_p50"),
    ("x faster", "speedup_vs_teacher"),
    ("verified", "verified"),
]


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    teacher_name = "teacher: " + str(report["teacher"]["path"]).split("/")[-1]
    teachers = [{**report["teacher"], "path": teacher_name}]
    if report.get("teacher_tflite"):
        teachers.append({**report["teacher_tflite"], "path": "teacher as float TFLite (baseline)"})
    for r in [*teachers, *report["artifacts"]]:
        row = {}
        for title, key in COLUMNS:
            v = r.get(key)
            if key == "path":
                row[title] = str(v).rsplit("/", 1)[-1]  # report.json has the full path
            elif key == "size_bytes":
                row[title] = human_size(v)
            elif (key == "accuracy" and v is not None) or (
                key == "agreement_with_teacher" and v is not None
            ):
                row[title] = f"{100 * v:.2f}%"
            elif key == "verified":
                row[title] = _verified(r)
            elif key == "speedup_vs_teacher":
                row[title] = speedup_text(r)
            else:
                row[title] = format_cell(v)
        rows.append(row)
    return rows


def speedup_text(r: dict[str, Any]) -> str:
    """The 'x faster' of a report row: the interleaved ratio with its interval, "no measurable
    change" when the interval holds 1.0 (rows of older reports: the bare ratio)."""
    s = r.get("speedup")
    if not s:
        return format_cell(r.get("speedup_vs_teacher"))
    ci = f"{100 * s.get('confidence', 0.95):.0f}% CI {s['ci_low']:.2f}-{s['ci_high']:.2f}"
    if s.get("verdict") == "no measurable change":
        return f"no measurable change ({s['ratio']:.2f}x, {ci})"
    return f"{s['ratio']:.2f}x ({ci})"


def _verified(r: dict[str, Any]) -> str:
    v = r.get("verification")
    if not v:
        return "-"
    if v.get("criterion") == "max_abs_error" and v.get("max_abs_error") is not None:
        return f"max err {v['max_abs_error']:.1e}"
    if v.get("top1_agreement") is not None:
        return f"agree {100 * v['top1_agreement']:.1f}%"
    return "yes"


def render_markdown(report: dict[str, Any]) -> str:
    rows = table_rows(report)
    titles = [t for t, _ in COLUMNS]
    lines = [
        f"# edgekit compress: recipe `{report['recipe']}`",
        "",
        f"Data: {report['data']['name']} ({report['data']['classes']} classes, images "
        f"{'x'.join(map(str, report['data']['image_shape']))}), evaluated on {report['data']['eval_samples']} "
        "held-out samples. Latency: CPU, 1 thread, batch 1, p50.",
        "",
        "| " + " | ".join(titles) + " |",
        "|" + "|".join("---" for _ in titles) + "|",
    ]
    lines += ["| " + " | ".join(r[t] for t in titles) + " |" for r in rows]
    lines += [
        "",
        f"Ratios ('x smaller', 'x faster') are against the {report.get('ratios_against', 'teacher')}.",
        f"Final artifact: `{report.get('final_artifact')}`",
    ]
    lines += [f"Note: {n}" for n in report.get("notes", [])]
    if report.get("budget"):
        b = report["budget"]
        verdict = "met" if b.get("passed") else "MISSED"
        lines.append(
            f"Accuracy budget: max drop {b['max_accuracy_drop']} points, final drop {b['drop']}: {verdict}"
        )
    lines += ["", "## Stages", ""]
    for s in report.get("stages", []):
        extra = ", reused from the previous run" if s.get("reused") else ""
        lines.append(f"- **{s['stage']}** ({s['seconds']} s{extra})")
        if s.get("stage") == "channel_prune" and s.get("layers"):
            lines += _channel_table(s)
    return "\n".join(lines) + "\n"


def _channel_table(s: dict[str, Any]) -> list[str]:
    """Per layer of a channel_prune stage: channels and MACs before and after."""
    out = [
        "",
        f"  MACs {s['macs_before']:,} -> {s['macs_after']:,} ({100 * s['macs_kept']:.1f}% kept, "
        f"target {100 * s['target_macs']:.0f}%, criterion {s.get('criterion')})",
    ]
    lat = s.get("latency_target")
    if lat and lat.get("chosen"):
        ch = lat["chosen"]
        verdict = "met" if lat.get("target_reached") else "NOT met"
        out.append(
            f"  Latency target {lat['target_latency']} of the unpruned model's {lat['measure']} "
            f"on {lat['device']} ({lat['precision']}): {ch['latency_ratio']:.3f} at "
            f"{100 * ch['macs_kept']:.1f}% of the MACs, {verdict} ({len(lat['probes'])} probe(s))"
        )
    out += [
        "",
        "  | layer | class | channels | MACs |",
        "  |---|---|---|---|",
    ]
    for r in s["layers"]:
        out.append(
            f"  | {r['layer']} | {r['class']} | {r['channels_before']} -> {r['channels_after']} "
            f"| {r['macs_before']:,} -> {r['macs_after']:,} |"
        )
    whole = ", ".join(
        f"{w['layer']} ({w['class']}: {w['reason']})" for w in s.get("left_whole", [])
    )
    if whole:
        out += ["", f"  Left whole: {whole}"]
    return [*out, ""]
