"""Tables for people from the `tune` report (edgekit.tune; the JSON report is the source)."""

from __future__ import annotations

from typing import Any


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _latency(c: dict[str, Any]) -> str:
    lat = c.get("latency") or {}
    if lat.get("instructions") is not None:
        return f"{lat['instructions'] / 1e6:.3f} M instr"
    return "-" if lat.get("ms") is None else f"{lat['ms']:.4f} ms"


def _speedup(c: dict[str, Any]) -> str:
    lat = c.get("latency") or {}
    s = lat.get("speedup")
    if s is None:
        return "-"
    ci = lat.get("ratio_ci")
    if ci and ci[0] and ci[1]:
        return f"{s:.2f}x ({1 / ci[1]:.2f}-{1 / ci[0]:.2f})"
    return f"{s:.2f}x"


def candidate_rows(report: dict[str, Any], names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per candidate (or per name in `names`, in that order)."""
    by = {c["name"]: c for c in report["candidates"]}
    chosen = (report.get("chosen") or {}).get("name")
    front = set(report.get("front") or [])
    rows = []
    for name in names if names is not None else list(by):
        c = by[name]
        rows.append(
            {
                "candidate": ("* " if name == chosen else "") + name,
                "top-1 %": _pct(c.get("top1")),
                "agreement %": _pct(c.get("agreement")),
                "drop (pts)": f"{c['drop']:.2f}",
                "latency": _latency(c),
                "speed-up vs float": _speedup(c),
                "size (KB)": f"{c['size_bytes'] / 1e3:.1f}",
                "front": "yes" if name in front else "",
            }
        )
    return rows


def sensitivity_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "rank": s["rank"],
            "Keras layer": s["layer"] + (" (ambiguous)" if s.get("ambiguous") else ""),
            "ops": ", ".join(s["ops"]),
            "lost when only it is int8 (pts)": "-"
            if s.get("lost_points") is None
            else f"{s['lost_points']:.2f}",
            "tensor error (rel. RMSE)": "-"
            if s.get("tensor_error") is None
            else f"{s['tensor_error']:.3f}",
        }
        for s in report.get("sensitivity") or []
    ]


def budget_line(report: dict[str, Any]) -> str:
    b = report["budget"]
    parts = []
    if b.get("max_accuracy_drop") is not None:
        parts.append(f"accuracy drop <= {b['max_accuracy_drop']:g} pts")
    if b.get("max_latency_ms") is not None:
        parts.append(f"latency <= {b['max_latency_ms']:g} ms")
    if b.get("max_size_mb") is not None:
        parts.append(f"size <= {b['max_size_mb']:g} MB")
    return ", ".join(parts) or "no budget"


def summary_line(report: dict[str, Any]) -> str:
    t = report["trials"]
    head = f"budget: {budget_line(report)}; {t['used']} of {t['max']} trials ({t['cached']} cached)"
    c = report.get("chosen")
    if not c:
        return f"{head}. Nothing meets the budget; the Pareto front is above."
    return (
        f"{head}. Chosen: {c['name']} (drop {c['drop']:.2f} pts, {_latency(c)}, "
        f"{_speedup(c)} vs float, {c['size_bytes'] / 1e3:.1f} KB): {c['path']}"
    )


def tune_tables(report: dict[str, Any], *, err: bool = False) -> None:
    """The candidates, the sensitivity table, the precision of the chosen model's ops, a summary."""
    import click

    from edgekit.ui import render_table

    click.echo(f"Latency: {report['latency']['metric']}.", err=err)
    render_table(candidate_rows(report), title="Candidates (* chosen)")
    render_table(candidate_rows(report, report["front"]), title="Pareto front (fastest first)")
    if report.get("sensitivity"):
        render_table(sensitivity_rows(report), title="Sensitivity by Keras layer")
    if report.get("op_precisions"):
        render_table(
            [
                {k: o[k] for k in ("index", "op", "layer", "precision")}
                for o in report["op_precisions"]
            ],
            title="Chosen model: precision of each op",
        )
    click.echo(summary_line(report), err=err)


def render_markdown(report: dict[str, Any]) -> str:
    """The tune report as Markdown (candidates, front, sensitivity, chosen model's ops)."""

    def table(rows: list[dict[str, Any]]) -> list[str]:
        if not rows:
            return ["(none)"]
        keys = list(rows[0])
        out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
        return out

    lines = [f"# edgekit tune: {report['model']['name']}", "", summary_line(report), ""]
    lines += ["## Candidates", "", *table(candidate_rows(report)), ""]
    lines += ["## Sensitivity by Keras layer", "", *table(sensitivity_rows(report)), ""]
    if report.get("op_precisions"):
        lines += ["## Chosen model: precision of each op", ""]
        lines += table(
            [{k: o[k] for k in ("op", "layer", "precision")} for o in report["op_precisions"]]
        )
    return "\n".join(lines) + "\n"
