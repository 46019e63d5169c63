"""Check results where CI users look: a table on stdout, JUnit XML (one test case per criterion),
and a markdown summary appended to $GITHUB_STEP_SUMMARY. The JSON report is the source of truth;
everything here renders it."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

STATUS_WORD = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "skipped": "skipped"}
STATUS_ICON = {"pass": "✅", "warn": "⚠️", "fail": "❌", "skipped": "➖"}


def short_count(n: float) -> str:
    """12345678 -> "12.35M"."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.4g}{unit}"
    return f"{n:.0f}"


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _signed(x: float, digits: int) -> str:
    return f"{x + 0.0:+.{digits}f}"  # + 0.0 turns -0.0 into 0.0


COLUMNS = ["criterion", "baseline", "candidate", "change [CI]", "allowed", "p", "result"]


def rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per criterion (and top-k for information), as strings, in COLUMNS."""
    out = []
    for c in report["criteria"]:
        row = dict.fromkeys(COLUMNS, "-")
        row.update(criterion=c["title"], result=STATUS_WORD[c["status"]])
        if c["name"] in ("accuracy", "class_accuracy") and "drop_pts" in c:
            if c["name"] == "class_accuracy":
                row["criterion"] = f"class {c['worst']} (worst)"
            row.update(
                baseline=_fmt_pct(c["baseline"]),
                candidate=_fmt_pct(c["candidate"]),
                allowed=f"drop <= {c['threshold_pts']:.2f} pts",
                p=f"{c['p_value']:.2g}",
            )
            row["change [CI]"] = (
                f"{_signed(-c['drop_pts'], 2)} pts [{_signed(-c['ci_high_pts'], 1)}, "
                f"{_signed(-c['ci_low_pts'], 1)}]"
            )
        elif c["name"] == "latency" and c.get("metric") == "instructions":
            row.update(
                baseline=f"{short_count(c['baseline'])} instr",
                candidate=f"{short_count(c['candidate'])} instr",
                allowed=f"<= +{c['threshold_pct']:g}%",
            )
            row["change [CI]"] = f"{_signed(c['change_pct'], 2)}% [+-{c['spread_pct']:.2f} spread]"
        elif c["name"] == "latency" and "change" in c:
            pct = lambda r: (r - 1.0) * 100.0  # noqa: E731
            row.update(
                baseline=f"{c['baseline']:.3g}x ref",
                candidate=f"{c['candidate']:.3g}x ref",
                allowed=f"<= +{c['threshold_pct']:g}%",
            )
            row["change [CI]"] = (
                f"{_signed(pct(c['change']), 1)}% [{_signed(pct(c['ci_low']), 1)}, "
                f"{_signed(pct(c['ci_high']), 1)}]"
            )
        out.append(row)
    acc = report["accuracy"]
    row = dict.fromkeys(COLUMNS, "-")
    row.update(
        criterion=f"top-{acc['candidate']['k']} accuracy",
        baseline=_fmt_pct(acc["baseline"]["topk"]),
        candidate=_fmt_pct(acc["candidate"]["topk"]),
        result="info",
    )
    row["change [CI]"] = (
        f"{_signed((acc['candidate']['topk'] - acc['baseline']['topk']) * 100, 2)} pts"
    )
    out.append(row)
    return out


def headline(report: dict[str, Any]) -> str:
    name = Path(report["model"]["path"]).name
    verdict = "FAIL" if report["verdict"] == "fail" else "pass"
    extra = f" with {len(report['warnings'])} warning(s)" if report["warnings"] else ""
    return f"edgekit check {name} against {report['baseline']['path']}: {verdict}{extra}"


def print_table(report: dict[str, Any]) -> None:
    """The table on stdout, then one line per criterion, warnings and notes, and the verdict.

    CI logs are not terminals: the table is laid out for 120 columns there rather than rich's
    80, so that numbers stay on one line.
    """
    import sys

    from rich import box
    from rich.console import Console
    from rich.table import Table

    data = report["data"]
    title = (
        f"edgekit check: {Path(report['model']['path']).name} vs baseline "
        f"{report['baseline']['model']['name']} on {data['name']} ({data['count']:,} images)"
    )
    width = None if sys.stdout.isatty() else 120
    console = Console(highlight=False, soft_wrap=False, width=width)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for col in COLUMNS:
        table.add_column(col, no_wrap=col != "criterion", justify="left")
    for r in rows(report):
        table.add_row(*[r[c] for c in COLUMNS])
    console.print(table)

    def out(text: str, **kw: Any) -> None:
        console.print(text, soft_wrap=True, **kw)

    out(
        f"Top-1 agreement with the baseline's predictions: {report['accuracy']['top1_agreement']:.2%}"
    )
    for c in report["criteria"]:
        out(f"[{STATUS_WORD[c['status']]}] {c['title']}: {c['message']}", markup=False)
    for w in report["warnings"]:
        if not any(w == c["message"] for c in report["criteria"]):
            out(f"warning: {w}", markup=False)
    for n in report["notes"]:
        out(f"note: {n}", markup=False)
    est = estimate_line(report)
    if est:
        out(est, markup=False)
    out(headline(report), markup=False)


def estimate_line(report: dict[str, Any]) -> str | None:
    """For an instruction-count check: the profile's latency estimate, not judged."""
    lat = report.get("latency") or {}
    est = lat.get("estimate") if report.get("latency_metric") == "instructions" else None
    if not est or not est.get("calibrated"):  # uncalibrated: the JSON says why, no line here
        return None
    err = est.get("expected_error")
    band = f" +-{err:.0%}" if err is not None else ""
    return (
        f"estimated latency on {lat['target']}: {est['ms']:.3g} ms{band} per invoke "
        f"({est['threads']} thread(s); information only, not judged)."
    )


# --- JUnit XML ----------------------------------------------------------------------------------


def junit_xml(report: dict[str, Any]) -> str:
    """A <testsuites> document with one <testcase> per criterion: <failure> for a regression,
    <skipped> for a criterion not checked, <system-out> with the message (warnings included)."""
    crits = report["criteria"]
    suite = ET.Element(
        "testsuite",
        name="edgekit check",
        tests=str(len(crits)),
        failures=str(sum(c["status"] == "fail" for c in crits)),
        errors="0",
        skipped=str(sum(c["status"] == "skipped" for c in crits)),
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("model", report["model"]["path"]),
        ("baseline", report["baseline"]["path"]),
        ("data", f"{report['data']['name']} ({report['data']['count']} images)"),
        *_latency_properties(report),
    ):
        ET.SubElement(props, "property", name=k, value=str(v))
    for c in crits:
        case = ET.SubElement(suite, "testcase", classname="edgekit.check", name=c["title"])
        if c["status"] == "fail":
            fail = ET.SubElement(case, "failure", message=c["summary"], type="regression")
            fail.text = c["message"]
        elif c["status"] == "skipped":
            ET.SubElement(case, "skipped", message=c["message"])
        prefix = "WARNING: " if c["status"] == "warn" else ""
        ET.SubElement(case, "system-out").text = prefix + c["message"]
    return _document(suite)


def _latency_properties(report: dict[str, Any]) -> list[tuple[str, str]]:
    """JUnit properties for an instruction-count latency: the device and the counts."""
    lat = report.get("latency") or {}
    if report.get("latency_metric") != "instructions" or not lat:
        return [("latency_metric", str(report.get("latency_metric")))]
    est = lat.get("estimate") or {}
    out = [
        ("latency_metric", "instructions"),
        ("target", f"{lat['target']} ({lat['qemu_cpu']}, {lat['threads']} thread(s))"),
        ("instructions_baseline", f"{lat['baseline_median']:.0f}"),
        ("instructions_candidate", f"{lat['median']:.0f}"),
        ("instructions_spread", f"{lat['baseline_spread']:.4%} / {lat['spread']:.4%}"),
        ("litert_aarch64", str(lat.get("litert_version"))),
    ]
    if est.get("calibrated"):
        out.append(("estimated_ms", f"{est['ms']:.3g} (information only)"))
    return out


def junit_error_xml(message: str, model: str | None = None) -> str:
    """JUnit XML for a check that could not be made: one test case with an <error>."""
    suite = ET.Element(
        "testsuite", name="edgekit check", tests="1", failures="0", errors="1", skipped="0"
    )
    name = f"check {Path(model).name}" if model else "check"
    case = ET.SubElement(suite, "testcase", classname="edgekit.check", name=name)
    ET.SubElement(case, "error", message=message, type="check not made").text = message
    return _document(suite)


def _document(suite: ET.Element) -> str:
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | os.PathLike, xml: str) -> Path:
    from edgekit.artifacts import write_text_atomic
    from edgekit.errors import UsageError

    try:
        return write_text_atomic(path, xml)
    except OSError as e:
        raise UsageError(f"Cannot write JUnit XML to {path} ({e.strerror or e}).") from None


# --- GitHub step summary ----------------------------------------------------------------------------


def markdown_summary(report: dict[str, Any]) -> str:
    """A markdown section: verdict heading, the criteria table, warnings and notes."""
    icon = STATUS_ICON["fail" if report["verdict"] == "fail" else "pass"]
    lines = [f"### {icon} {headline(report)}", ""]
    table = rows(report)
    cols = COLUMNS
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in table:
        icon = {w: STATUS_ICON[k] for k, w in STATUS_WORD.items()}.get(r["result"], "")
        cells = [f"{icon} {r[c]}".strip() if c == "result" else r[c] for c in cols]
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    lines.append("")
    for c in report["criteria"]:
        if c["status"] in ("fail", "warn"):
            lines.append(f"- **{STATUS_WORD[c['status']]}** {c['title']}: {c['message']}")
    for w in report["warnings"]:
        if not any(w == c["message"] for c in report["criteria"]):
            lines.append(f"- **warning** {w}")
    for n in report["notes"]:
        lines.append(f"- note: {n}")
    est = estimate_line(report)
    if est:
        lines.append(f"- {est}")
    return "\n".join(lines).rstrip() + "\n\n"


def markdown_error(message: str, model: str | None = None) -> str:
    name = f" {Path(model).name}" if model else ""
    return f"### {STATUS_ICON['fail']} edgekit check{name}: could not be made\n\n{message}\n\n"


def append_step_summary(text: str) -> Path | None:
    """Append to the file named by $GITHUB_STEP_SUMMARY (GitHub Actions); None when unset."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    from edgekit.errors import UsageError

    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(
            f"Cannot append to GITHUB_STEP_SUMMARY={target} ({e.strerror or e})."
        ) from None
    return Path(target)


def baseline_rows(info: dict[str, Any]) -> list[dict[str, str]]:
    """`edgekit baseline create` table: what was stored."""
    acc, lat, data, model = info["accuracy"], info["latency"], info["data"], info["model"]
    out = [
        {"what": "model", "value": f"{model['name']} ({model['format']}, {model['runtime']} "
                                   f"{model['runtime_version']}, {model['num_classes']} classes)"},
        {"what": "data", "value": f"{data['name']}: {data['count']:,} images, sha256 "
                                  f"{data['sha256'][:12]}"},
        {"what": "top-1", "value": _fmt_pct(acc["top1"])},
        {"what": f"top-{acc['k']}", "value": _fmt_pct(acc["topk"])},
    ]  # fmt: skip
    if acc["nonfinite"]:
        out.append({"what": "NaN/inf scores", "value": f"{acc['nonfinite']} images"})
    if lat is None:
        out.append({"what": "latency", "value": "not measured (--no-latency)"})
    elif lat.get("metric") == "instructions":
        out.append(
            {
                "what": "latency",
                "value": (
                    f"{short_count(lat['median'])} instructions per invoke on the emulated "
                    f"{lat['target']} ({lat['qemu_cpu']}, {lat['threads']} thread(s)); spread "
                    f"{lat['spread']:.2%} over {lat['runs']} invokes; LiteRT aarch64 "
                    f"{lat['litert_version']}"
                ),
            }
        )
        est = lat.get("estimate") or {}
        if est.get("calibrated"):
            out.append({"what": "estimated ms", "value": f"{est['ms']:.3g} (information only)"})
    else:
        out.append(
            {
                "what": "latency",
                "value": (
                    f"{lat['ratio']:.3g}x the reference {lat['reference']['name']} "
                    f"(95% CI {lat['ci_low']:.3g} to {lat['ci_high']:.3g}); median "
                    f"{lat['model_p50_ms']:.3g} ms of {lat['clock']} time per invoke on this "
                    f"machine, {lat['threads']} thread(s), {lat['rounds']} rounds"
                ),
            }
        )
    return out
