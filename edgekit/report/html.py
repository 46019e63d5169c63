"""One self-contained HTML page per report: compress runs, bench, eval and check.

The page is one file that opens offline (from a CI artifact, an email attachment): styles inline,
plots inline as SVG (`edgekit.report.plots`), no script at all, and a Content-Security-Policy that
forbids fetching anything. Every string that came from the user or a model file (paths, labels,
recipe strings, messages) goes through `esc()`; only this module's own markup is trusted.

A kind of report is one function registered with `@section_renderer("kind")` that returns the
page's sections; `edgekit tune` will add its front and sensitivity table as one more function.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import __version__
from edgekit.errors import UsageError
from edgekit.report.markdown import speedup_text


class Safe(str):
    """Markup this module built (already escaped); anything else is escaped when inserted."""

    def __add__(self, other: Any) -> Safe:
        return Safe(str.__add__(self, esc(other)))

    def __radd__(self, other: Any) -> Safe:
        return Safe(str.__add__(esc(other), self))


def esc(value: Any) -> Safe:
    """A value as HTML text: markup characters and quotes escaped, None as an en dash."""
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("–")
    return Safe(html.escape(str(value), quote=True))


def join(parts: Sequence[Any]) -> Safe:
    return Safe("".join(esc(p) for p in parts))


@dataclass
class Section:
    """One part of the page: a title, a line saying how to read it, and its content."""

    title: str
    body: Safe
    intro: str | None = None
    anchor: str | None = None


# (report, extras) -> (head: {title, subtitle, top}, sections)
Renderer = Callable[[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], list[Section]]]
RENDERERS: dict[str, Renderer] = {}
TITLES: dict[str, str] = {}


def section_renderer(kind: str, title: str) -> Callable[[Renderer], Renderer]:
    """Register the function that turns a `kind` report (and extras, e.g. a manifest) into
    sections."""

    def register(fn: Renderer) -> Renderer:
        RENDERERS[kind] = fn
        TITLES[kind] = title
        return fn

    return register


def detect_kind(report: Any) -> str:
    """Which command made a report: "compress", "bench", "eval" or "check"."""
    if isinstance(report, dict):
        if {"artifacts", "stages", "teacher"} <= report.keys():
            return "compress"
        if {"verdict", "criteria"} <= report.keys():
            return "check"
        if {"models", "settings"} <= report.keys():
            return "bench"
        if {"top1", "count", "labels"} <= report.keys():
            return "eval"
        if "front" in report and "tune" in RENDERERS:
            return "tune"
    raise UsageError(
        "This JSON is not an edgekit report (expected what compress writes to report.json, or "
        "what bench, eval or check print with --json). Pass a run folder or such a file."
    )


# --- building blocks ------------------------------------------------------------------------


def tag(name: str, content: Any = "", **attrs: Any) -> Safe:
    attributes = "".join(
        f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None
    )
    return Safe(f"<{name}{attributes}>{esc(content)}</{name}>")


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], *, cls: str = "") -> Safe:
    head = join(tag("th", h) for h in headers)
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    return Safe(
        f'<div class="table-wrap"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def kv_table(rows: Sequence[tuple[Any, Any]]) -> Safe:
    body = join(tag("tr", tag("th", k) + tag("td", v)) for k, v in rows)
    return Safe(f'<div class="table-wrap"><table class="kv"><tbody>{body}</tbody></table></div>')


def note(text: Any) -> Safe:
    return tag("p", text, class_="note")


def badge(status: str) -> Safe:
    word = {"pass": "pass", "warn": "warning", "fail": "FAIL", "skipped": "skipped"}
    return tag("span", word.get(status, status), class_=f"badge {status}")


def plot(name: str, caption: str, draw: Callable[..., str], *args: Any, **kwargs: Any) -> Safe:
    """A figure holding one drawn plot; a plot that cannot be drawn becomes a one-line note (the
    rest of the page still renders)."""
    try:
        svg = draw(*args, **kwargs)
    except Exception as e:  # odd data must not cost the whole page
        return note(f"The {name} plot could not be drawn ({type(e).__name__}: {e}).")
    return Safe(
        f'<figure class="plot" data-plot="{esc(name)}">{svg}'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def guarded(title: str, build: Callable[..., Any], *args: Any) -> list[Section]:
    """The sections `build` makes (one, a list or None); if the report holds something it does
    not expect, one section saying so instead (the rest of the page still renders)."""
    try:
        made = build(*args)
    except Exception as e:
        return [
            Section(
                title,
                note(f"This part could not be drawn from the report ({type(e).__name__}: {e})."),
            )
        ]
    if made is None:
        return []
    return made if isinstance(made, list) else [made]


def details(summary: str, content: Safe) -> Safe:
    return Safe(f"<details><summary>{esc(summary)}</summary>{content}</details>")


def pre_json(obj: Any) -> Safe:
    return tag("pre", json.dumps(obj, indent=2, sort_keys=False, default=str))


def pct(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{100 * float(v):.{digits}f}%"


def num(v: Any, fmt: str = "{:.3g}") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if fmt == "{:.3g}" and abs(v) >= 1000:
            return f"{v:,.0f}"
        return fmt.format(v)
    return str(v)


def human_bytes(n: Any) -> str:
    """Sizes in binary units, named as such (588.0 KiB is 602 kB), like the page's MiB of RSS."""
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def base_name(path: Any) -> str:
    return str(path).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def unique(names: Sequence[str]) -> list[str]:
    out, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n} #{seen[n]}")
    return out


def machine_text(m: dict[str, Any] | None) -> str:
    if not m:
        return "–"
    parts = [m.get("device"), m.get("cpu")]
    if m.get("usable_cores") is not None:
        parts.append(f"{m['usable_cores']} usable of {m.get('logical_cores')} logical cores")
    parts.append(m.get("os"))
    return ", ".join(str(p) for p in parts if p)


# --- the page -------------------------------------------------------------------------------

CSS = """
:root { --fg: #1d2125; --muted: #5b636b; --line: #d9dde1; --bg: #ffffff; --soft: #f4f6f8;
  --pass: #1e7b34; --warn: #9a6700; --fail: #c62828; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 6px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.intro { color: var(--muted); margin: 0 0 10px; max-width: 80ch; }
.note { color: var(--muted); font-style: italic; margin: 6px 0; }
nav { background: var(--soft); padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
nav a { margin-right: 14px; color: #0b57d0; text-decoration: none; white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: var(--soft); border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card .value { font-size: 1.35em; font-weight: 600; }
.card .label { color: var(--muted); font-size: 0.85em; }
.table-wrap { overflow-x: auto; margin: 8px 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
thead th { background: var(--soft); }
table.kv th { font-weight: 600; color: var(--muted); white-space: nowrap; }
tr.final td { font-weight: 600; background: #fff4f4; }
figure.plot { margin: 10px 0 18px; }
figure.plot svg.plot-svg { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 0.85em; max-width: 90ch; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 0.85em;
  font-weight: 600; color: white; background: var(--muted); }
.badge.pass { background: var(--pass); } .badge.warn { background: var(--warn); }
.badge.fail { background: var(--fail); }
.verdict { font-size: 1.2em; font-weight: 600; padding: 10px 14px; border-radius: 8px;
  margin: 12px 0; }
.verdict.pass { background: #e6f4ea; color: var(--pass); }
.verdict.fail { background: #fdecea; color: var(--fail); }
details { margin: 10px 0; }
summary { cursor: pointer; font-weight: 600; }
pre { background: var(--soft); padding: 10px; border-radius: 6px; overflow-x: auto;
  font-size: 0.82em; white-space: pre-wrap; word-break: break-word; }
ul.messages li { margin: 4px 0; }
footer { color: var(--muted); font-size: 0.85em; margin-top: 40px; }
"""

# Nothing may be fetched: styles and SVG are inline, there is no script.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(
    report: dict[str, Any], kind: str | None = None, *, extras: dict[str, Any] | None = None
) -> str:
    """The page for a report, as text. kind: "compress", "bench", "eval", "check" (None: told
    from the report's keys). extras: what a kind may show beside the report (compress: the run's
    manifest as `manifest`)."""
    kind = kind or detect_kind(report)
    if kind not in RENDERERS:
        raise UsageError(
            f"No HTML view for reports of kind {kind!r}. Expected one of: {', '.join(RENDERERS)}."
        )
    from edgekit.report import plots

    plots.start_page()
    head, sections = RENDERERS[kind](report, extras or {})
    title = head["title"]
    nav = join(
        tag("a", s.title, href=f"#{s.anchor or _anchor(s.title)}") for s in sections if s.title
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>",
        tag("h1", title),
        tag("p", head.get("subtitle", ""), class_="subtitle"),
        head.get("top", Safe("")),
        f"<nav>{nav}</nav>" if len(sections) > 2 else "",
    ]
    for s in sections:
        anchor = s.anchor or _anchor(s.title)
        parts.append(f'<section id="{esc(anchor)}">')
        parts.append(tag("h2", s.title))
        if s.intro:
            parts.append(tag("p", s.intro, class_="intro"))
        parts.append(s.body)
        parts.append("</section>")
    parts.append(
        tag(
            "footer",
            f"Made by edgekit {__version__} from the {kind} report "
            f"(edgekit {report.get('edgekit_version') or __version__}); "
            "`edgekit report` renders it again from the JSON. One file: it needs no network.",
        )
    )
    parts.append("</main></body></html>\n")
    return "".join(str(p) for p in parts)


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-") or "section"


def cards(items: Sequence[tuple[str, Any]]) -> Safe:
    inner = join(
        Safe(
            f'<div class="card"><div class="value">{esc(v)}</div>{tag("div", label, class_="label")}</div>'
        )
        for label, v in items
    )
    return Safe(f'<div class="cards">{inner}</div>')


# --- writing and re-rendering ---------------------------------------------------------------


def write_html(
    report: dict[str, Any],
    path: str | os.PathLike,
    kind: str | None = None,
    *,
    extras: dict[str, Any] | None = None,
) -> Path:
    """Render and write the page atomically; returns the path."""
    from edgekit.artifacts import write_text_atomic

    page = render_html(report, kind, extras=extras)
    return write_text_atomic(path, page)


def load_report(source: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(report, extras, default output path) from a run folder (its report.json, and its
    manifest.json when present) or a JSON file a command wrote (`--json` output)."""
    p = Path(source)
    if p.is_dir():
        file = p / "report.json"
        if not file.is_file() and (p / "tune.json").is_file():  # an `edgekit tune --out` folder
            file = p / "tune.json"
        if not file.is_file():
            raise UsageError(
                f"{p} has no report.json, so it is not a finished compress run folder. Pass a "
                "run folder, or a JSON file written by bench, eval or check --json."
            )
        out = p / ("tune.html" if file.name == "tune.json" else "report.html")
    elif p.is_file():
        file, out = p, p.with_suffix(".html")
    else:
        raise UsageError(f"{p} does not exist. Pass a compress run folder or a report JSON file.")
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(
            f"{file} is not readable JSON ({type(e).__name__}: {e}). Pass the report.json of a "
            "run, or the output of bench, eval or check --json."
        ) from None
    extras: dict[str, Any] = {}
    manifest = file.parent / "manifest.json"
    if file.name == "report.json" and manifest.is_file():
        try:
            extras["manifest"] = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            extras["manifest_note"] = f"{manifest.name} is not readable JSON; not shown."
    return report, extras, out


# --- compress ------------------------------------------------------------------------------


def _rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, kind, row) for the teacher, its float TFLite baseline and every artifact."""
    out = [(f"teacher ({base_name(report['teacher'].get('path'))})", "teacher", report["teacher"])]
    if report.get("teacher_tflite"):
        out.append(("teacher as float TFLite (baseline)", "reference", report["teacher_tflite"]))
    names = unique([base_name(a.get("path")) for a in report.get("artifacts", [])])
    out += [(n, "artifact", a) for n, a in zip(names, report.get("artifacts", []), strict=True)]
    return out


@section_renderer("compress", "edgekit compress")
def compress_sections(
    report: dict[str, Any], extras: dict[str, Any]
) -> tuple[dict[str, Any], list[Section]]:
    data = report.get("data") or {}
    final_path = report.get("final_artifact")
    final = next((a for a in report.get("artifacts", []) if a.get("path") == final_path), None)
    head = {
        "title": f"edgekit compress: recipe {report.get('recipe')}",
        "subtitle": (
            f"Data: {data.get('name')} ({data.get('classes')} classes, images "
            f"{'x'.join(str(d) for d in data.get('image_shape') or [])}), evaluated on "
            f"{data.get('eval_samples')} held-out images. Final artifact: {final_path or 'none'}."
        ),
        "top": _compress_cards(report, final),
    }
    sections = [
        *guarded("Every model of the run", _compress_table, report, final_path),
        *guarded("Size, speed and accuracy", _compress_pareto, report, final_path),
        *guarded("Stage timeline", _compress_timeline, report),
        *guarded("Training", _compress_training, report),
        *guarded("Pruning: sparsity per layer", _compress_sparsity, report),
        *guarded("Per class", _compress_classes, report, final),
        *guarded("Manifest", _compress_details, report, extras),
    ]
    return head, sections


def _compress_cards(report: dict[str, Any], final: dict[str, Any] | None) -> Safe:
    if final is None:
        return note("This run produced no artifact.")
    items = [("final artifact", base_name(final.get("path")))]
    if final.get("size_ratio_to_teacher"):
        items.append(
            (
                f"smaller than the {report.get('ratios_against', 'teacher')}",
                f"{final['size_ratio_to_teacher']:.2f}x ({human_bytes(final.get('size_bytes'))})",
            )
        )
    if final.get("accuracy") is not None:
        drop = final.get("accuracy_drop_points")
        versus = ""
        if drop is not None:
            versus = f" ({abs(drop):.2f} pts {'below' if drop > 0 else 'above'} the teacher)"
            versus = " (as the teacher)" if drop == 0 else versus
        items.append(("top-1 accuracy", f"{pct(final['accuracy'])}{versus}"))
    if final.get("agreement_with_teacher") is not None:
        items.append(("agrees with the teacher", pct(final["agreement_with_teacher"])))
    if final.get("speedup_vs_teacher"):
        items.append(
            (
                "faster (CPU p50, 1 thread)",
                (
                    speedup_text(final)
                    if final.get("speedup")
                    else f"{final['speedup_vs_teacher']:.2f}x"
                )
                + f" ({num(final.get('latency_ms_p50'))} ms)",
            )
        )
    out = cards(items)
    budget = report.get("budget")
    if budget:
        status = "pass" if budget.get("passed") else "fail"
        text = (
            f"Accuracy budget: at most {budget.get('max_accuracy_drop')} points of top-1 lost; "
            f"the final artifact lost {budget.get('drop')}: {'met' if status == 'pass' else 'MISSED'}."
        )
        out = Safe(out + tag("div", text, class_=f"verdict {status}"))
    return out


def _compress_table(report: dict[str, Any], final_path: str | None) -> Section:
    headers = [
        "model",
        "stage",
        "format",
        "precision",
        "size",
        "x smaller",
        "top-1",
        "vs teacher (pts)",
        "agrees w/ teacher",
        "p50 ms",
        "x faster",
        "verified",
    ]
    body = []
    for label, _kind, r in _rows(report):
        row = [
            label,
            r.get("stage", "–"),
            r.get("format"),
            r.get("precision"),
            human_bytes(r.get("size_bytes")),
            num(r.get("size_ratio_to_teacher")),
            pct(r.get("accuracy")),
            _points_vs_teacher(r.get("accuracy_drop_points")),
            pct(r.get("agreement_with_teacher")),
            num(r.get("latency_ms_p50")),
            speedup_text(r) if r.get("speedup") else num(r.get("speedup_vs_teacher")),
            _verified(r),
        ]
        cls = "final" if r.get("path") == final_path and _kind == "artifact" else None
        body.append(tag("tr", join(tag("td", c) for c in row), class_=cls))
    head = join(tag("th", h) for h in headers)
    tbl = Safe(
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{join(body)}'
        "</tbody></table></div>"
    )
    notes = [note(f"Ratios are against the {report.get('ratios_against', 'teacher')}.")]
    lat = report.get("latency") or {}
    if lat.get("note"):
        notes.append(note(f"Latency: {lat['note']}, {lat.get('runs')} timed runs per model."))
    notes += [note(n) for n in report.get("notes") or []]
    return Section(
        "Every model of the run",
        Safe(tbl + join(notes)),
        "One row per model: the teacher you gave, then each artifact the recipe made, measured "
        "on the same held-out images. The highlighted row is the final artifact, the one to ship.",
    )


def _points_against(drop: float | None, other: str) -> str:
    """A top-1 drop (a fraction, positive = worse) in words: "50.67 pts below the reference"."""
    if drop is None:
        return "–"
    pts = 100 * drop
    if round(pts, 2) == 0:
        return f"as the {other}"
    return f"{abs(pts):.2f} pts {'below' if pts > 0 else 'above'} the {other}"


def _points_vs_teacher(drop: float | None) -> str:
    """A drop as the change a reader expects: 1.5 points lost reads -1.50, none reads 0.00."""
    if drop is None:
        return "–"
    return "0.00" if round(drop, 2) == 0 else f"{-drop:+.2f}"


def _verified(r: dict[str, Any]) -> str:
    v = r.get("verification")
    if not v:
        return "–"
    ok = "passed" if v.get("passed") else "FAILED"
    if v.get("criterion") == "max_abs_error" and v.get("max_abs_error") is not None:
        return f"{ok}: max error {v['max_abs_error']:.1e}"
    if v.get("top1_agreement") is not None:
        return f"{ok}: {100 * v['top1_agreement']:.1f}% agree"
    return ok


def _compress_pareto(report: dict[str, Any], final_path: str | None) -> Section:
    from edgekit.report import plots

    rows = _rows(report)
    labelled = report["teacher"].get("accuracy") is not None
    y_key, y_label = (
        ("accuracy", "top-1 accuracy (%)")
        if labelled
        else ("agreement_with_teacher", "top-1 agreement with the teacher (%)")
    )
    timed = any(r.get("latency_ms_p50") for _, _, r in rows)
    x_key = "latency_ms_p50" if timed else "size_bytes"
    points, left_out = [], []
    for label, kind, r in rows:
        x, y = r.get(x_key), r.get(y_key)
        if x is None or y is None:
            left_out.append(label)
            continue
        points.append(
            {
                "x": float(x) if timed else float(x) / 1024,
                "y": 100 * float(y),
                "size": r.get("size_bytes"),
                "label": label,
                "kind": kind,
                "chosen": kind == "artifact" and r.get("path") == final_path,
            }
        )
    body = []
    if points:
        x_label = "CPU latency p50, batch 1, 1 thread (ms)" if timed else "file size (KB)"
        body.append(
            plot(
                "pareto",
                "Up and to the left is better. Marker area is the file size; the grey square is "
                "the teacher, the grey diamond the teacher as float TFLite; the red ring marks "
                "the final artifact; the dashed line joins the artifacts no other beats on both "
                "axes.",
                plots.pareto,
                points,
                x_label=x_label,
                y_label=y_label,
                log_x=_spread(p["x"] for p in points) > 20,
            )
        )
    if not timed:
        body.append(note("No latency was measured (--no-latency): file size stands in for it."))
    if not labelled:
        body.append(
            note("The data have no labels: agreement with the teacher stands in for top-1.")
        )
    if left_out:
        body.append(note(f"Not plotted (no figure to place them): {', '.join(left_out)}."))
    return Section(
        "Size, speed and accuracy",
        join(body) if body else note("No model has the figures to place it."),
        "Each model where it sits between latency and accuracy: the models worth shipping are "
        "on the upper-left edge.",
    )


def _spread(values: Any) -> float:
    vals = [v for v in values if v and v > 0]
    return max(vals) / min(vals) if vals else 1.0


def _compress_timeline(report: dict[str, Any]) -> Section | None:
    from edgekit.report import plots

    stages = report.get("stages") or []
    if not stages:
        return None
    items = [
        {
            "label": f"{i + 1}. {s.get('stage')}",
            "seconds": float(s.get("seconds") or 0),
            "reused": s.get("reused"),
        }
        for i, s in enumerate(stages)
    ]
    total = sum(s["seconds"] for s in items)
    rows = [
        [
            s["label"],
            f"{s['seconds']:.1f} s",
            "reused from an earlier run" if s["reused"] else "ran",
            _stage_outcome(r),
            r.get("key"),
        ]
        for s, r in zip(items, stages, strict=True)
    ]
    if all(s["reused"] for s in items):  # bars of 0 s say nothing: say why instead
        body = note(
            "Every stage was reused from an earlier run in this folder (inputs and settings "
            "unchanged), so this run spent no time in them; the run that made them has the times."
        )
    else:
        body = plot(
            "timeline",
            f"The stages in the order they ran, {total:.1f} s in all (measuring the artifacts "
            "afterwards is not included). Hatched bars were reused: their inputs and settings "
            "had not changed since an earlier run in this folder.",
            plots.timeline,
            items,
        )
    return Section(
        "Stage timeline",
        Safe(body + table(["stage", "time", "", "what it made", "cache key"], rows)),
        "Where the run's time went.",
    )


def _stage_outcome(r: dict[str, Any]) -> str:
    """One line of what a stage record says it made, dropped and noticed."""
    parts = []
    if r.get("student"):
        params = r.get("parameters")
        parts.append(f"student {r['student']}" + (f", {num(params)} parameters" if params else ""))
    if r.get("overall_sparsity") is not None:
        parts.append(f"overall sparsity {pct(r['overall_sparsity'], 1)}")
    if r.get("exports"):
        parts.append(", ".join(str(e) for e in r["exports"]))
    for d in r.get("dropped") or []:
        if isinstance(d, dict):
            what = " ".join(str(d[k]) for k in ("format", "mode") if d.get(k))
            parts.append(f"dropped {what}: {d.get('reason')}")
        else:
            parts.append(f"dropped {d}")
    parts += [str(n) for n in r.get("notes") or []]
    return "; ".join(parts) or "–"


# Metric names as a person reads them, and which panel each goes in.
_PANEL_TITLES = {
    "loss": "loss",
    "accuracy": "top-1 accuracy",
    "agreement": "agreement with the teacher",
    "lr": "learning rate",
    "learning_rate": "learning rate",
}


def _compress_training(report: dict[str, Any]) -> list[Section]:
    from edgekit.report import plots

    out = []
    for i, s in enumerate(report.get("stages") or []):
        hist = s.get("history") or {}
        series = {k: v for k, v in hist.items() if isinstance(v, list) and v}
        if not series:
            continue
        panels, seen = [], set()
        for key in series:
            base = key[4:] if key.startswith("val_") else key
            if base in seen:
                continue
            seen.add(base)
            lines = []
            if base in series:
                lines.append({"label": "training", "values": series[base]})
            if f"val_{base}" in series:
                lines.append(
                    {"label": "validation", "values": series[f"val_{base}"], "dashed": True}
                )
            panels.append(
                {"title": _PANEL_TITLES.get(base, base.replace("_", " ")), "series": lines}
            )
        body = [
            plot(
                f"training-{s.get('stage')}",
                "Per epoch: solid lines on the training images, dashed on the validation images "
                "(held out from training).",
                plots.curves,
                panels,
            )
        ]
        extra = []
        if s.get("epochs_run") is not None:
            extra.append(f"{s['epochs_run']} epoch(s) run")
        if s.get("best_epoch") is not None:
            extra.append(f"the weights of epoch {s['best_epoch']} kept")
        if extra:
            body.append(note("; ".join(extra) + "."))
        if not {"lr", "learning_rate"} & series.keys():
            cfg = (s.get("config") or {}).get("optimizer") or s.get("config") or {}
            lr = cfg.get("learning_rate")
            sched = cfg.get("schedule")
            said = (
                f" (configured: {lr:g}{', ' + sched if sched else ''})"
                if isinstance(lr, int | float)
                else ""
            )
            body.append(note(f"Learning rate per epoch: not recorded in this run's history{said}."))
        out.append(
            Section(
                f"Training: {s.get('stage')}",
                join(body),
                "How training went, epoch by epoch. Validation figures that stop improving while "
                "training ones still climb mean more epochs would not help.",
                anchor=f"training-{i}",
            )
        )
    return out


def _compress_sparsity(report: dict[str, Any]) -> list[Section]:
    from edgekit.report import plots

    out = []
    for i, s in enumerate(report.get("stages") or []):
        per_layer = s.get("per_layer_sparsity")
        if not per_layer:
            continue
        names = list(per_layer)
        values = [100 * float(per_layer[n]) for n in names]
        target = (s.get("config") or {}).get("target_sparsity")
        overall = s.get("overall_sparsity")
        body = [
            plot(
                "sparsity",
                "Share of each pruned layer's weights that are zero"
                + (", against the recipe's target (dashed)." if target is not None else "."),
                plots.hbars,
                names,
                values,
                x_label="weights set to zero (%)",
                line=None if target is None else 100 * float(target),
                line_label=None if target is None else f"target {100 * float(target):.0f}%",
                xlim=(0, 105),
                fmt="{:.1f}%",
            )
        ]
        facts = []
        if overall is not None:
            facts.append(f"overall sparsity {pct(overall, 1)}")
        if s.get("gzip_size_bytes"):
            facts.append(f"gzipped model {human_bytes(s['gzip_size_bytes'])}")
        if facts:
            body.append(note("; ".join(facts) + "."))
        skipped = s.get("skipped_layers") or []
        if skipped:
            body.append(
                note(
                    f"Left dense: {', '.join(str(k.get('layer', k)) if isinstance(k, dict) else str(k) for k in skipped)}."
                )
            )
        out.append(
            Section(
                "Pruning: sparsity per layer",
                join(body),
                "Pruning sets the smallest weights of each layer to zero.",
                anchor=f"sparsity-{i}",
            )
        )
    return out


def _compress_classes(report: dict[str, Any], final: dict[str, Any] | None) -> Section:
    teacher = report.get("teacher") or {}
    title = "Per class: final artifact vs teacher"
    intro = (
        "Which classes the final artifact gets right as often as the teacher, and which it "
        "confuses."
    )
    if not final or not final.get("per_class") or not teacher.get("per_class"):
        return Section(
            title,
            note(
                "No per-class figures in this report (runs made before edgekit recorded them, or "
                "unlabeled data)."
            ),
            intro,
        )
    labels = [c.get("label") for c in teacher["per_class"]]
    matrices = [
        ("teacher", teacher.get("confusion_matrix")),
        (f"final: {base_name(final.get('path'))}", final.get("confusion_matrix")),
    ]
    return Section(
        title,
        class_views(
            labels,
            [
                ("teacher", teacher["per_class"]),
                (f"final: {base_name(final.get('path'))}", final["per_class"]),
            ],
            matrices,
        ),
        intro,
    )


MAX_CLASS_BARS = 40
MAX_CONFUSION = 30


def class_views(
    labels: list[str],
    per_class: Sequence[tuple[str, list[dict[str, Any]]]],
    matrices: Sequence[tuple[str, Any]] = (),
) -> Safe:
    """Per-class accuracy bars for one or more models and their confusion matrices, with a
    table of the figures."""
    from edgekit.report import plots

    acc = [[c.get("accuracy") for c in rows] for _, rows in per_class]
    order = list(range(len(labels)))
    cut = ""
    if len(labels) > MAX_CLASS_BARS:
        if len(acc) > 1:  # the classes that changed most
            order.sort(key=lambda i: -abs((acc[0][i] or 0) - (acc[-1][i] or 0)))
            cut = f"the {MAX_CLASS_BARS} classes whose accuracy changed most, of {len(labels)}"
        else:  # the worst ones
            order.sort(key=lambda i: acc[0][i] if acc[0][i] is not None else 2)
            cut = f"the {MAX_CLASS_BARS} least accurate classes, of {len(labels)}"
        order = order[:MAX_CLASS_BARS]
    changes = None
    if len(acc) > 1:
        changes = [
            None if acc[0][i] is None or acc[-1][i] is None else 100 * (acc[-1][i] - acc[0][i])
            for i in order
        ]
    body = [
        plot(
            "per-class",
            "Top-1 accuracy per class"
            + (f" ({cut})" if cut else "")
            + (
                f"; above each pair, {per_class[-1][0]} against {per_class[0][0]} in points "
                "(red: lost)."
                if changes
                else "."
            ),
            plots.grouped_bars,
            [labels[i] for i in order],
            [
                {"label": name, "values": [None if a[i] is None else 100 * a[i] for i in order]}
                for (name, _), a in zip(per_class, acc, strict=True)
            ],
            y_label="top-1 accuracy (%)",
            ylim=(0, 110),
            changes=changes,
        )
    ]
    usable = [(t, m) for t, m in matrices if m]
    if usable and len(labels) <= MAX_CONFUSION:
        body.append(
            plot(
                "confusion",
                "Rows are the true class, columns the predicted one; the colour is the share of "
                "the row, the number the count of images. The diagonal is right.",
                plots.confusion,
                usable,
                labels,
            )
        )
    elif usable:
        body.append(
            note(
                f"Confusion matrix left out: {len(labels)} classes are too many to read (the JSON has it)."
            )
        )
    headers = ["class", "images", *[f"{name} top-1" for name, _ in per_class]]
    rows = [
        [labels[i], per_class[0][1][i].get("count"), *[pct(a[i]) for a in acc]]
        for i in range(len(labels))
    ]
    body.append(details("Per-class figures", table(headers, rows)))
    return join(body)


def _compress_details(report: dict[str, Any], extras: dict[str, Any]) -> Section:
    manifest = extras.get("manifest")
    parts = []
    if manifest:
        versions = manifest.get("versions") or {}
        parts.append(details("Versions", kv_table(sorted(versions.items()))))
        parts.append(details("Seeds", kv_table(sorted((manifest.get("seeds") or {}).items()))))
        inputs = manifest.get("inputs") or {}
        model = inputs.get("model") or {}
        rows = [
            ("teacher", model.get("path")),
            ("teacher sha256", model.get("sha256")),
            ("data", (inputs.get("data") or {}).get("spec")),
        ]
        for split, fp in (inputs.get("data") or {}).items():
            if isinstance(fp, dict):
                rows.append(
                    (f"data: {split}", f"{fp.get('count')} images, sha256 {fp.get('sha256')}")
                )
        parts.append(details("Inputs", kv_table(rows)))
        outputs = manifest.get("outputs") or {}
        parts.append(details("Outputs (sha256)", kv_table(sorted(outputs.items()))))
        parts.append(details("Recipe, resolved", pre_json(manifest.get("recipe"))))
        parts.append(
            note(
                f"Run made {manifest.get('created')} with edgekit {manifest.get('edgekit_version')}."
            )
        )
    else:
        parts.append(
            note(
                extras.get("manifest_note")
                or "No manifest.json beside this report; the hashes below come from report.json."
            )
        )
        rows = [(label, r.get("sha256")) for label, _, r in _rows(report)]
        parts.append(details("Models (sha256)", kv_table(rows)))
    data = report.get("data") or {}
    parts.append(
        details(
            "Data",
            kv_table(
                [
                    ("name", data.get("name")),
                    ("source", data.get("source")),
                    ("classes", ", ".join(str(x) for x in data.get("labels") or [])),
                    (
                        "splits",
                        ", ".join(f"{k} {v}" for k, v in (data.get("splits") or {}).items()),
                    ),
                    ("unlabeled images", data.get("unlabeled_source")),
                    ("preprocessing", json.dumps(data.get("preprocessing"))),
                ]
            ),
        )
    )
    parts.append(details("report.json", pre_json(report)))
    return Section(
        "Manifest",
        join(parts),
        "What reproduces this run: versions, seeds, the hash of every input and output. Folded "
        "away; open what you need.",
    )


# --- bench ---------------------------------------------------------------------------------


@section_renderer("bench", "edgekit bench")
def bench_sections(
    report: dict[str, Any], extras: dict[str, Any]
) -> tuple[dict[str, Any], list[Section]]:
    models = report.get("models") or []
    names = unique([str(m.get("name") or base_name(m.get("model"))) for m in models])
    settings = report.get("settings") or {}
    device = report.get("device")
    where = f"emulated {device.get('title')}" if device else f"target {settings.get('target')}"
    head = {
        "title": f"edgekit bench: {', '.join(names)}",
        "subtitle": f"{where}; {report.get('source') or 'measured on this machine'}; machine: "
        f"{machine_text(report.get('machine'))}.",
    }
    sections = guarded("Figures per model", _bench_table, report, models, names)
    if device:
        sections += guarded("Static analysis", _device_sections, report, models, names)
    else:
        sections += [
            *guarded("Latency distribution", _bench_distributions, models, names),
            *guarded("Interleaved comparison", _bench_comparison, report, names),
            *guarded("Start-up and memory", _bench_startup, models, names),
        ]
    sections.append(
        Section(
            "Settings and machine",
            Safe(
                kv_table(
                    sorted(
                        (k, json.dumps(v) if isinstance(v, dict | list) else v)
                        for k, v in settings.items()
                    )
                )
                + details("Machine", kv_table(sorted((report.get("machine") or {}).items())))
                + details("Report (JSON)", pre_json(report))
            ),
            "How the figures were taken.",
        )
    )
    return head, [s for s in sections if s is not None]


def _bench_table(report: dict[str, Any], models: list[dict[str, Any]], names: list[str]) -> Section:
    def lat(m: dict[str, Any], key: str) -> str:
        s = m.get("latency_ms") or {}
        return num(s.get(key))

    rows = [
        ("runtime", [f"{m.get('runtime')} {m.get('runtime_version')}" for m in models]),
        ("target / threads", [f"{m.get('target')} / {m.get('threads')}" for m in models]),
        (
            "delegate / provider",
            [m.get("delegate") or m.get("provider") or m.get("accelerator") for m in models],
        ),
        ("fallback", [m.get("fallback") or "none" for m in models]),
        ("load (ms)", [num(m.get("load_ms")) for m in models]),
        ("first inference (ms)", [num(m.get("first_inference_ms")) for m in models]),
        *[(f"{k} (ms)", [lat(m, k) for m in models]) for k in ("p50", "p90", "p99", "mean", "std")],
        ("cv", [pct((m.get("latency_ms") or {}).get("cv"), 1) for m in models]),
        ("runs counted", [num((m.get("latency_ms") or {}).get("count")) for m in models]),
        ("peak RSS (MiB)", [num(m.get("peak_rss_mb")) for m in models]),
        ("RSS increase (MiB)", [num(m.get("rss_increase_mb")) for m in models]),
        ("figures", [m.get("source") for m in models]),
    ]
    if any(m.get("instructions") for m in models):
        rows = [
            *rows[:4],
            (
                "instructions / invoke (median)",
                [num((m.get("instructions") or {}).get("median"), "{:,.0f}") for m in models],
            ),
            (
                "emulated time p50 (ms, NOT a latency)",
                [num((m.get("emulated_ms") or {}).get("p50")) for m in models],
            ),
            ("figures", [m.get("source") for m in models]),
        ]
    return Section(
        "Figures per model",
        table(["", *names], [[label, *vals] for label, vals in rows]),
        "Times are per invoke (one batch) in milliseconds; p50 is the median of the timed runs.",
    )


def _bench_distributions(models: list[dict[str, Any]], names: list[str]) -> Section:
    from edgekit.report import plots

    with_samples = [
        (n, (m.get("latency_ms") or {}).get("samples_ms"))
        for n, m in zip(names, models, strict=True)
    ]
    with_samples = [(n, s) for n, s in with_samples if s]
    title = "Latency distribution"
    intro = (
        "Every timed run of each model. A narrow shape means steady timings; a long tail to the "
        "right means some runs were slowed (by the machine, or by the model's own work)."
    )
    if not with_samples:
        return Section(
            title,
            note(
                "This report holds no per-run times (bench writes them with --samples or --html)."
            ),
            intro,
        )
    body = plot(
        "latency-distribution",
        "Each dot is one timed run; the black bar is the median (p50).",
        plots.distributions,
        [n for n, _ in with_samples],
        [s for _, s in with_samples],
        x_label="latency per invoke (ms)",
    )
    return Section(title, body, intro)


def _bench_comparison(report: dict[str, Any], names: list[str]) -> Section | None:
    from edgekit.report import plots

    cmp = report.get("comparison")
    if not cmp:
        return None
    rows = cmp.get("rows") or []
    conf = cmp.get("confidence")
    level = f"{round(100 * conf)}%" if conf else "the"
    body = plot(
        "ratios",
        f"p50 of each model divided by the p50 of the first, with its {level} interval: an "
        "interval that does not cross 1 is a real difference, not noise.",
        plots.intervals,
        names[: len(rows)],
        [r.get("ratio") for r in rows],
        [r.get("ci_low") for r in rows],
        [r.get("ci_high") for r in rows],
        x_label=f"p50 latency relative to {names[0]}",
        reference=1.0,
        reference_label="same speed",
    )
    tbl = table(
        ["model", "p50 (ms)", "ratio to the first", f"{level} interval", "differs"],
        [
            [
                n,
                num(r.get("p50_ms")),
                num(r.get("ratio"), "{:.3f}"),
                f"{num(r.get('ci_low'), '{:.3f}')} – {num(r.get('ci_high'), '{:.3f}')}",
                "yes" if r.get("significant") else "no",
            ]
            for n, r in zip(names, rows, strict=False)
        ],
    )
    extra = note(f"Method: {cmp.get('method')}.") if cmp.get("method") else Safe("")
    return Section(
        "Interleaved comparison",
        Safe(body + tbl + extra),
        "The models ran in turns (A B A B ...), so a busy machine slows them alike and their "
        "ratio holds.",
    )


def _bench_startup(models: list[dict[str, Any]], names: list[str]) -> Section:
    from edgekit.report import plots

    body = [
        plot(
            "startup",
            "Loading the model (runtime and graph preparation) and its first inference, which "
            "often pays for allocations and kernel set-up. Log scale.",
            plots.grouped_bars,
            names,
            [
                {"label": "load (ms)", "values": [m.get("load_ms") for m in models]},
                {
                    "label": "first inference (ms)",
                    "values": [m.get("first_inference_ms") for m in models],
                },
                {
                    "label": "p50 afterwards (ms)",
                    "values": [(m.get("latency_ms") or {}).get("p50") for m in models],
                },
            ],
            y_label="milliseconds",
            log_y=True,
            horizontal_labels=True,
        ),
        plot(
            "memory",
            "Resident memory: the process's peak, and how much it grew while this model loaded "
            "and ran once (the first model to use a runtime also pays for the runtime).",
            plots.grouped_bars,
            names,
            [
                {"label": "peak RSS (MiB)", "values": [m.get("peak_rss_mb") for m in models]},
                {
                    "label": "RSS increase (MiB)",
                    "values": [m.get("rss_increase_mb") for m in models],
                },
            ],
            y_label="MiB",
            horizontal_labels=True,
        ),
    ]
    return Section("Start-up and memory", join(body), "What a cold start costs.")


ESTIMATE_HEADERS = [
    "model", "precision", "threads", "estimate ms", "band ms", "expected error", "basis", "notes"
]  # fmt: skip


def _device_sections(
    report: dict[str, Any], models: list[dict[str, Any]], names: list[str]
) -> list[Section]:
    dev = report.get("device") or {}
    statics = [(n, m.get("static")) for n, m in zip(names, models, strict=True) if m.get("static")]
    out = [_static_section(dev, statics)] if statics else []
    return [*out, _estimate_section(report, dev, models, names)]


def _static_section(dev: dict[str, Any], statics: list[tuple[str, dict[str, Any]]]) -> Section:
    """Ops, MACs, memory and delegate coverage per model, from reading the files."""
    from edgekit.report import plots

    rows = [
        ("precision", [s.get("precision") for _, s in statics]),
        ("ops", [num((s.get("totals") or {}).get("ops")) for _, s in statics]),
        ("MACs", [num((s.get("totals") or {}).get("macs")) for _, s in statics]),
        (
            "weights",
            [human_bytes((s.get("totals") or {}).get("weights_bytes")) for _, s in statics],
        ),
        (
            "peak activation memory",
            [human_bytes((s.get("peak_activation") or {}).get("bytes")) for _, s in statics],
        ),
    ]
    for acc in dev.get("accelerators") or []:
        vals = []
        for _, s in statics:
            total = (s.get("totals") or {}).get("ops") or 0
            fb = ((s.get("delegates") or {}).get(acc) or {}).get("fallback_ops") or []
            vals.append(
                f"{total - len(fb)} of {total} ops"
                + (f" ({len(fb)} fall back to the CPU)" if fb else "")
            )
        rows.append((f"on {acc}", vals))
    by_op: dict[str, list[float]] = {}
    for k, (_, s) in enumerate(statics):
        for op in s.get("ops") or []:
            by_op.setdefault(op.get("op"), [0.0] * len(statics))[k] += float(op.get("macs") or 0)
    ops = sorted((o for o in by_op if any(by_op[o])), key=lambda o: -max(by_op[o]))
    body = [table(["", *[n for n, _ in statics]], [[label, *v] for label, v in rows])]
    if ops:
        body.append(
            plot(
                "macs-by-op",
                "Multiply-accumulates per op type, from reading the model file (no run).",
                plots.grouped_bars,
                ops,
                [
                    {"label": n, "values": [by_op[o][k] / 1e6 for o in ops]}
                    for k, (n, _) in enumerate(statics)
                ],
                y_label="million MACs",
            )
        )
    findings = [
        tag("li", f"{f.get('level')}: {n}: {f.get('message')} [{f.get('code')}]")
        for n, s in statics
        for f in s.get("findings") or []
        if f.get("level") != "info"
    ]
    if findings:
        body.append(Safe(f'<ul class="messages">{join(findings)}</ul>'))
    return Section(
        "Static analysis",
        join(body),
        f"What the model asks of a {dev.get('title')}: ops, arithmetic, memory, and which "
        "ops each accelerator's delegate takes.",
    )


def _estimate_section(
    report: dict[str, Any], dev: dict[str, Any], models: list[dict[str, Any]], names: list[str]
) -> Section:
    """Each model's estimated latency with its band, and the counted instructions."""
    from edgekit.report import plots

    labels, vals, lows, highs, colors, rows = [], [], [], [], [], []
    for k, (n, m) in enumerate(zip(names, models, strict=True)):
        for e in (m.get("estimate") or {}).get("by_threads") or []:
            if e.get("ms") is None:
                continue
            threads = e.get("threads")
            # the name shortened on its own: the threads must stay, and the names differ there
            labels.append(f"{plots.short(n, 34)}, {threads} thread{'' if threads == 1 else 's'}")
            colors.append(plots.COLORS[k % len(plots.COLORS)])
            vals.append(e["ms"])
            lows.append(e.get("low_ms"))
            highs.append(e.get("high_ms"))
            err = e.get("expected_error")
            basis = e.get("basis") or ("fitted" if e.get("calibrated") else None)
            if e.get("clamped"):
                basis = f"{basis}, held at the core's peak rate"
            rows.append(
                [
                    n,
                    e.get("precision"),
                    threads,
                    num(e["ms"]),
                    f"{num(e.get('low_ms'))} to {num(e.get('high_ms'))}",
                    "–" if err is None else f"±{100 * err:.0f}%",
                    basis,
                    "; ".join(str(x) for x in e.get("notes") or []) or "–",
                ]
            )
    first = (models[0].get("estimate") or {}) if models else {}
    if labels:
        body = Safe(
            plot(
                "estimate",
                "Estimated latency on the device, each with the expected error band of its "
                "precision (from the profile's calibration). An estimate from counted "
                "instructions, NOT a latency measured on the device.",
                plots.intervals,
                labels,
                vals,
                lows,
                highs,
                x_label=f"estimated latency on {dev.get('name')} (ms)",
                colors=colors,
            )
            + table(ESTIMATE_HEADERS, rows)
        )
        formula = note(f"Formula: {first.get('formula')}.") if first.get("formula") else Safe("")
    else:
        body = note(
            f"No latency estimate: {dev.get('name')} has no fitted constants yet, so only the "
            "instruction counts are reported."
        )
        formula = Safe("")
    cmp = report.get("comparison")
    tbl = Safe("")
    if cmp:
        tbl = table(
            ["model", "instructions / invoke", "ratio to the first", "run-to-run spread"],
            [
                [
                    n,
                    num(r.get("instructions"), "{:,.0f}"),
                    num(r.get("ratio"), "{:.3f}"),
                    pct(r.get("spread"), 3),
                ]
                for n, r in zip(names, cmp.get("rows") or [], strict=False)
            ],
        )
    return Section(
        "Latency estimate",
        Safe(body + formula + tbl),
        "Instructions per invoke are counted on an emulated core of the device (exact, no "
        "timing noise); the profile turns them into milliseconds. Emulated wall time is not "
        "a latency.",
    )


# --- eval ----------------------------------------------------------------------------------


@section_renderer("eval", "edgekit eval")
def eval_sections(
    result: dict[str, Any], extras: dict[str, Any]
) -> tuple[dict[str, Any], list[Section]]:
    data = result.get("data") or {}
    name = result.get("name") or base_name(result.get("model"))
    head = {
        "title": f"edgekit eval: {name}",
        "subtitle": f"{result.get('runtime')} on {result.get('target')}; data {data.get('name')} "
        f"({result.get('count')} images).",
    }
    ref = result.get("reference")
    items = [
        ("top-1", pct(result.get("top1"))),
        (f"top-{result.get('k')}", pct(result.get("topk"))),
    ]
    rows = [("model", result.get("model")), ("data", data.get("source") or data.get("name"))]
    if ref:
        items += [
            ("agreement with the reference", pct(ref.get("top1_agreement"))),
            ("top-1 against the reference", _points_against(ref.get("top1_drop"), "reference")),
        ]
        rows += [
            ("reference", result.get("reference_model")),
            ("reference top-1", pct(ref.get("reference_top1"))),
            ("mean KL(reference || model)", num(ref.get("mean_kl"), "{:.4g}") + " nats"),
        ]
    numerics = result.get("numerics")
    if numerics:
        rows += [
            ("arm64 vs x86: max abs output diff", num(numerics.get("max_abs_diff"))),
            ("arm64 vs x86: top-1 agreement", pct(numerics.get("top1_agreement"))),
            (
                "arm64 vs x86: changed predictions",
                f"{numerics.get('changed_predictions')} of {numerics.get('count')}",
            ),
        ]
    p = result.get("preprocessing") or {}
    rows.append(("preprocessing", f"(pixels - {p.get('mean')}) / {p.get('std')}"))
    body = Safe(cards(items) + kv_table(rows))
    if result.get("note"):
        body = Safe(body + note(result["note"]))
    sections = [Section("Summary", body, "Accuracy of the model on the data set.")]
    if result.get("per_class"):
        sections.append(
            Section(
                "Per class",
                class_views(
                    list(result.get("labels") or []),
                    [(name, result["per_class"])],
                    [(name, result.get("confusion_matrix"))],
                ),
                "Which classes the model gets right, and what it takes them for when it does not.",
            )
        )
    else:
        sections.append(
            Section("Per class", note("The data have no labels: no per-class accuracy."), None)
        )
    sections.append(Section("Report (JSON)", details("Report (JSON)", pre_json(result)), None))
    return head, sections


# --- check ---------------------------------------------------------------------------------


@section_renderer("check", "edgekit check")
def check_sections(
    report: dict[str, Any], extras: dict[str, Any]
) -> tuple[dict[str, Any], list[Section]]:
    model = report.get("model") or {}
    base = report.get("baseline") or {}
    data = report.get("data") or {}
    verdict = report.get("verdict")
    criteria = report.get("criteria") or []
    line = (
        "PASS: no regression beyond the allowed tolerances"
        if verdict == "pass"
        else "FAIL: regression in "
        + ", ".join(c.get("title") for c in criteria if c.get("status") == "fail")
    )
    if report.get("warnings") and verdict == "pass":
        line += f" ({len(report['warnings'])} warning(s))"
    head = {
        "title": f"edgekit check: {base_name(model.get('path'))}",
        "subtitle": f"Against the baseline {base.get('path')} (model "
        f"{(base.get('model') or {}).get('name')}), on {data.get('name')} ({data.get('count')} images).",
        "top": tag("div", line, class_=f"verdict {'pass' if verdict == 'pass' else 'fail'}"),
    }
    crit_rows = [
        [badge(c.get("status", "")), c.get("title"), c.get("summary") or "–", c.get("message")]
        for c in report.get("criteria") or []
    ]
    body = [table(["result", "criterion", "in short", "in full"], crit_rows)]
    msgs = [
        tag("li", f"warning: {w}")
        for w in report.get("warnings") or []
        if not any(w == c.get("message") for c in report.get("criteria") or [])
    ]
    msgs += [tag("li", f"note: {n}") for n in report.get("notes") or []]
    if msgs:
        body.append(Safe(f'<ul class="messages">{join(msgs)}</ul>'))
    sections = [
        Section(
            "Criteria",
            join(body),
            "Each criterion fails only when the change is beyond its tolerance AND the data show "
            "it is real (significant); beyond the tolerance but not significant is a warning.",
        )
    ]
    by_name = {c.get("name"): c for c in report.get("criteria") or []}
    sections += guarded(
        "Accuracy",
        _check_accuracy,
        report,
        by_name.get("accuracy") or {},
        by_name.get("class_accuracy") or {},
    )
    sections += guarded("Latency", _check_latency, report, by_name.get("latency") or {})
    rows = [
        ("candidate", model.get("path")),
        ("candidate sha256", model.get("sha256")),
        ("baseline file", base.get("path")),
        ("baseline made", f"{base.get('created')} with edgekit {base.get('edgekit_version')}"),
        ("data", f"{data.get('spec')} ({data.get('count')} images, sha256 {data.get('sha256')})"),
        ("thresholds", json.dumps(report.get("thresholds"))),
        ("machine", machine_text(report.get("machine"))),
    ]
    sections.append(
        Section(
            "Details",
            Safe(
                kv_table(rows)
                + details("Versions", kv_table(sorted((report.get("versions") or {}).items())))
                + details("Report (JSON)", pre_json(report))
            ),
            None,
        )
    )
    return head, sections


def _check_accuracy(report: dict[str, Any], crit: dict[str, Any], cls: dict[str, Any]) -> Section:
    from edgekit.report import plots

    body = []
    if crit.get("count"):
        n, b, c = int(crit["count"]), int(crit.get("lost") or 0), int(crit.get("gained") or 0)
        base_right = round(float(crit.get("baseline") or 0) * n)
        both_right = base_right - b
        both_wrong = n - both_right - b - c
        body.append(tag("h3", "McNemar counts: the same images, both models"))
        body.append(
            table(
                ["", "candidate right", "candidate wrong"],
                [
                    ["baseline right", f"{both_right:,}", f"{b:,} (lost)"],
                    ["baseline wrong", f"{c:,} (gained)", f"{both_wrong:,}"],
                ],
            )
        )
        body.append(
            note(
                f"Only the images one model gets right and the other wrong tell them apart: "
                f"{b} lost against {c} gained; exact McNemar p = {num(crit.get('p_value'))}. "
                f"Top-1 {pct(crit.get('baseline'))} -> {pct(crit.get('candidate'))}, drop "
                f"{num(crit.get('drop_pts'), '{:+.2f}')} pts (interval "
                f"{num(crit.get('ci_low_pts'), '{:+.2f}')} to {num(crit.get('ci_high_pts'), '{:+.2f}')}), "
                f"allowed {num(crit.get('threshold_pts'), '{:.2f}')}."
            )
        )
        body.append(
            plot(
                "accuracy-drop",
                "The top-1 drop with its interval against the allowed drop (dashed): a fail "
                "needs the drop beyond it and significant.",
                plots.intervals,
                ["top-1 drop"],
                [float(crit.get("drop_pts") or 0)],
                [crit.get("ci_low_pts")],
                [crit.get("ci_high_pts")],
                x_label="top-1 drop (points; positive is worse)",
                reference=0.0,
                reference_label="no change",
                limit=crit.get("threshold_pts"),
                limit_label="allowed drop",
                colors=[_status_color(crit.get("status"))],
            )
        )
    classes = cls.get("classes") or []
    if classes:
        body.append(
            plot(
                "class-drops",
                "The drop of each class with its interval, against the allowed class drop "
                "(Holm's correction over the classes decides significance).",
                plots.intervals,
                [r.get("label") for r in classes],
                [float(r.get("drop_pts") or 0) for r in classes],
                [r.get("ci_low_pts") for r in classes],
                [r.get("ci_high_pts") for r in classes],
                x_label="drop (points; positive is worse)",
                reference=0.0,
                limit=cls.get("threshold_pts"),
                limit_label="allowed class drop",
                colors=[_status_color(r.get("status")) for r in classes],
            )
        )
    acc = report.get("accuracy") or {}
    bpc = (acc.get("baseline") or {}).get("per_class")
    cpc = (acc.get("candidate") or {}).get("per_class")
    if bpc and cpc and len(bpc) == len(cpc):
        body.append(tag("h3", "Per class"))
        body.append(
            class_views([c.get("label") for c in bpc], [("baseline", bpc), ("candidate", cpc)])
        )
    if acc.get("top1_agreement") is not None:
        body.append(
            note(f"Top-1 agreement with the baseline's predictions: {pct(acc['top1_agreement'])}.")
        )
    return Section(
        "Accuracy",
        join(body) if body else note("No accuracy figures in this report."),
        "The candidate and the baseline judged on the very same images.",
    )


def _status_color(status: Any) -> str:
    from edgekit.report import plots

    return {"fail": plots.FAIL_COLOR, "warn": plots.WARN_COLOR}.get(str(status), plots.PASS_COLOR)


def _check_latency(report: dict[str, Any], crit: dict[str, Any]) -> Section:
    from edgekit.report import plots

    title = "Latency"
    if crit.get("status") == "skipped" or not crit:
        return Section(title, note(crit.get("message") or "Latency was not checked."), None)
    tol = crit.get("threshold_pct")
    if crit.get("metric") == "instructions":
        change = float(crit.get("change_pct") or 0)
        band = float(crit.get("spread_pct") or 0)
        lo, hi = change - band, change + band
        what = f"instructions per invoke on the emulated {crit.get('target')}"
        intro = (
            "Instructions per invoke counted on an emulated core of the device, against the "
            "baseline's count; the band is the run-to-run spread of both counts."
        )
    else:
        change = (float(crit.get("change") or 1) - 1) * 100
        lo = None if crit.get("ci_low") is None else (crit["ci_low"] - 1) * 100
        hi = None if crit.get("ci_high") is None else (crit["ci_high"] - 1) * 100
        what = "CPU time as a ratio to the reference network"
        intro = (
            "The candidate's time per invoke as a ratio to a reference network timed alongside "
            "it, against the baseline's ratio: a slower or busier machine slows both alike. It "
            "fails when the whole interval lies beyond the allowed increase."
        )
    body = plot(
        "latency-interval",
        f"Change of {what}, with its interval, against the allowed increase (dashed).",
        plots.intervals,
        ["latency change"],
        [change],
        [lo],
        [hi],
        x_label="latency change (%; positive is slower)",
        reference=0.0,
        reference_label="no change",
        limit=tol,
        limit_label=f"allowed +{num(tol)}%",
        colors=[_status_color(crit.get("status"))],
    )
    est = (report.get("latency") or {}).get("estimate") or {}
    extra = Safe("")
    if est.get("calibrated") and est.get("ms") is not None:
        extra = note(
            f"Estimated latency on {crit.get('target')}: {num(est.get('ms'))} ms per invoke (information only, not judged)."
        )
    return Section(title, Safe(body + note(crit.get("message")) + extra), intro)


# --- tune ------------------------------------------------------------------------------------


@section_renderer("tune", "edgekit tune")
def tune_sections(
    report: dict[str, Any], extras: dict[str, Any]
) -> tuple[dict[str, Any], list[Section]]:
    from edgekit.report.tune import budget_line, candidate_rows, sensitivity_rows

    model = (report.get("model") or {}).get("name")
    lat = report.get("latency") or {}
    head = {
        "title": f"edgekit tune: {model}",
        "subtitle": f"budget: {budget_line(report)}; latency: {lat.get('metric')}; "
        f"data {(report.get('data') or {}).get('spec')}.",
    }
    chosen = report.get("chosen") or {}
    trials = report.get("trials") or {}
    items = [
        ("verdict", report.get("verdict")),
        ("chosen", chosen.get("name") or "none"),
        ("drop (points)", num(chosen.get("drop"), "{:.2f}") if chosen else "–"),
        ("speed-up vs float", num((chosen.get("latency") or {}).get("speedup"), "{:.2f}x")),
        ("trials", f"{trials.get('used')} of {trials.get('max')}"),
    ]
    sections = [
        Section("Summary", cards(items), "The model chosen: the fastest inside every budget.")
    ]
    sections += guarded("Pareto front", _tune_front, report)
    rows = candidate_rows(report)
    if rows:
        sections.append(
            Section(
                "Candidates",
                table(list(rows[0]), [list(r.values()) for r in rows]),
                "Every model measured (* chosen); drop is against the Keras model.",
            )
        )
    sens = sensitivity_rows(report)
    if sens:
        sections += guarded("Sensitivity by Keras layer", _tune_sensitivity, report, sens)
    ops = report.get("op_precisions") or []
    if ops:
        sections.append(
            Section(
                "Precision of each op",
                table(
                    ["op", "Keras layer", "precision"],
                    [[o.get("op"), o.get("layer"), o.get("precision")] for o in ops],
                ),
                "Which ops of the chosen model run at which precision.",
            )
        )
    return head, sections


def _tune_front(report: dict[str, Any]) -> Section:
    from edgekit.report import plots

    chosen = (report.get("chosen") or {}).get("name")
    pts = []
    for c in report.get("candidates") or []:
        v = (c.get("latency") or {}).get("value")
        if v is None:
            continue
        pts.append(
            {"x": float(v), "y": 100.0 - float(c.get("drop") or 0.0) if c.get("top1") is None
             else float(c["top1"]), "size": c.get("size_bytes"), "label": c.get("name"),
             "chosen": c.get("name") == chosen}
        )  # fmt: skip
    instr = "instructions" in str((report.get("latency") or {}).get("metric"))
    return Section(
        "Pareto front",
        plot(
            "tune-front",
            "Each candidate: latency against top-1, marker area by size; the dashed line joins the front.",
            plots.pareto,
            pts,
            x_label="instructions per invoke" if instr else "p50 latency (ms, log scale)",
            y_label="top-1 (%)",
            log_x=True,
        ),
        "Faster is left, more accurate is up.",
    )


def _tune_sensitivity(report: dict[str, Any], sens: list[dict[str, Any]]) -> Section:
    from edgekit.report import plots

    rows = report.get("sensitivity") or []
    bars = [(r["layer"], r.get("lost_points")) for r in rows if r.get("lost_points") is not None]
    body = table(list(sens[0]), [list(s.values()) for s in sens])
    if bars:
        body = Safe(
            plot(
                "tune-sensitivity",
                "Top-1 agreement lost when only this layer is quantized to int8.",
                plots.hbars,
                [b[0] for b in bars],
                [float(b[1]) for b in bars],
                x_label="points lost",
            )
            + body
        )
    return Section("Sensitivity by Keras layer", body, "Most sensitive first.")
