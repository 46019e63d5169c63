"""The plots of the HTML report, drawn with matplotlib (an Agg canvas) as inline SVG strings.

matplotlib is imported inside `figure()` only, so importing this module costs nothing and
`edgekit --help` / `edgekit bench model.tflite` stay light. Every function takes plain data
(numbers and the strings to show) and returns one `<svg>` element as text; the caller decides
where it goes. Text in the SVG is drawn as glyph outlines (matplotlib's default), so a label from
the user never becomes markup, and math text is off, so a `$` in a label is just a `$`.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

# One palette for every plot (matplotlib's tab10, colour-blind-friendlier than its defaults).
COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
TEACHER_COLOR = "#444444"
PASS_COLOR, WARN_COLOR, FAIL_COLOR = "#2ca02c", "#e69f00", "#d62728"
_counter = itertools.count()


def start_page() -> None:
    """Number the plots of a new page from 0 again: the same report draws the same page, byte for
    byte (ids stay unique within the page)."""
    global _counter
    _counter = itertools.count()


@contextlib.contextmanager
def figure(width: float = 7.0, height: float = 3.6, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """A matplotlib (figure, axes) with edgekit's style, on an Agg canvas of its own.

    No pyplot: nothing global changes (a notebook's backend stays as it is) and no GUI toolkit
    is ever loaded. The SVG is written inside the block, where the style holds.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    style = {
        "svg.hashsalt": f"edgekit-{next(_counter)}",  # ids unique between plots of one page
        "svg.fonttype": "path",
        "text.parse_math": False,
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 100,
    }
    with matplotlib.rc_context(style):
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        yield fig, fig.subplots(**subplots)


def to_svg(fig: Any) -> str:
    """The figure as one inline `<svg>` element (no XML prolog, no DOCTYPE, no date)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:].replace("<svg", '<svg class="plot-svg" role="img"', 1)


def plain_log_ticks(axis: Any) -> None:
    """Log-axis tick labels as plain numbers (0.1, 1, 10), not math text; an axis spanning less
    than three decades is labelled at 1, 2 and 5 of each decade too, so that it has numbers to
    read at all. Call it once the data is drawn."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    lo, hi = axis.get_view_interval()
    if lo > 0 and hi / lo < 1000:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def short(text: str, n: int = 40) -> str:
    """At most n characters; a longer text loses its middle (file names differ at the end)."""
    text = str(text)
    if len(text) <= n:
        return text
    tail = (n - 1) // 2
    return text[: n - 1 - tail] + "…" + text[-tail:]


def pareto(
    points: Sequence[dict[str, Any]],
    *,
    x_label: str,
    y_label: str,
    log_x: bool = False,
) -> str:
    """Each point: x, y, size (bytes, drawn as marker area), label, kind ("teacher",
    "reference" or "artifact") and chosen (the final artifact). The non-dominated artifacts
    (no other is both faster and more accurate) are joined by a step line; the legend names
    every point (labels beside the points would overlap where artifacts cluster)."""
    with figure(8.2, 4.4) as (fig, ax):
        sizes = [p["size"] for p in points if p.get("size")]
        biggest = max(sizes) if sizes else 1
        colour = iter(COLORS * (1 + len(points) // len(COLORS)))
        for p in points:
            area = 40 + 900 * (p["size"] / biggest) if p.get("size") else 80
            kind = p.get("kind", "artifact")
            label = short(p["label"], 40) + ("  (final)" if p.get("chosen") else "")
            if kind == "artifact":
                ax.scatter(p["x"], p["y"], s=area, color=next(colour), alpha=0.6,
                           edgecolor="black", lw=0.6, label=label, zorder=3)  # fmt: skip
            else:
                ax.scatter(p["x"], p["y"], s=area, color=TEACHER_COLOR, alpha=0.35,
                           marker="s" if kind == "teacher" else "D", edgecolor="black", lw=0.8,
                           label=label, zorder=2)  # fmt: skip
            if p.get("chosen"):
                ax.scatter(p["x"], p["y"], s=area + 300, facecolor="none", edgecolor=FAIL_COLOR,
                           lw=2.2, zorder=4)  # fmt: skip
                ax.annotate("final", (p["x"], p["y"]), xytext=(0, 14), textcoords="offset points",
                            ha="center", fontsize=8, color=FAIL_COLOR, weight="bold")  # fmt: skip
        front = _front([p for p in points if p.get("kind", "artifact") == "artifact"])
        if len(front) > 1:
            ax.step([p["x"] for p in front], [p["y"] for p in front], where="post",
                    color="#999999", lw=1, ls="--", zorder=1)  # fmt: skip
        if log_x:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.margins(x=0.12, y=0.15)
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7.5,
                           frameon=False, borderaxespad=0)  # fmt: skip
        for handle in legend.legend_handles:
            handle.set_sizes([45])
        return to_svg(fig)


def _front(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both axes (smaller x, larger y), sorted by x."""
    out, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p["x"], -p["y"])):
        if p["y"] > best:
            out.append(p)
            best = p["y"]
    return out


def timeline(stages: Sequence[dict[str, Any]]) -> str:
    """Stages one after another as bars: label, seconds, reused."""
    with figure(7.5, 0.7 + 0.42 * len(stages)) as (fig, ax):
        start = 0.0
        total = sum(s["seconds"] for s in stages) or 1.0
        for i, s in enumerate(stages):
            width = max(s["seconds"], total * 0.004)
            ax.barh(
                i,
                width,
                left=start,
                color=COLORS[i % len(COLORS)],
                alpha=0.4 if s.get("reused") else 0.85,
                hatch="//" if s.get("reused") else None,
                edgecolor="black",
                lw=0.5,
            )
            text = f"{s['seconds']:.1f} s" + (" (reused)" if s.get("reused") else "")
            ax.text(start + width + total * 0.01, i, text, va="center", fontsize=8)
            start += s["seconds"]
        ax.set_yticks(range(len(stages)), [short(s["label"], 28) for s in stages])
        ax.invert_yaxis()
        ax.set_xlim(0, total * 1.25)
        ax.set_xlabel("seconds since the first stage started")
        ax.grid(axis="y", visible=False)
        return to_svg(fig)


def curves(panels: Sequence[dict[str, Any]]) -> str:
    """Training curves, one panel per quantity: {title, series: [{label, values, dashed}]}."""
    n = len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    with figure(2.4 * cols + 0.6, 2.3 * rows, nrows=rows, ncols=cols, squeeze=False) as (fig, axes):
        for k, ax in enumerate(axes.flat):
            if k >= n:
                ax.set_visible(False)
                continue
            panel = panels[k]
            for j, s in enumerate(panel["series"]):
                epochs = list(range(1, len(s["values"]) + 1))
                ax.plot(
                    epochs,
                    s["values"],
                    marker="o",
                    ms=3,
                    lw=1.4,
                    ls="--" if s.get("dashed") else "-",
                    color=COLORS[j % len(COLORS)],
                    label=s["label"],
                )
            ax.set_title(panel["title"], fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if len(panel["series"]) > 1:
                ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return to_svg(fig)


def hbars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
    line: float | None = None,
    line_label: str | None = None,
    xlim: tuple[float, float] | None = None,
    fmt: str = "{:.2f}",
) -> str:
    """One horizontal bar per label, with its value written beside it; `line` marks a target."""
    with figure(7.0, 0.6 + 0.26 * len(labels)) as (fig, ax):
        ax.barh(range(len(labels)), values, color=COLORS[0], alpha=0.8)
        for i, v in enumerate(values):
            ax.text(v, i, " " + fmt.format(v), va="center", fontsize=7)
        ax.set_yticks(range(len(labels)), [short(lb, 36) for lb in labels], fontsize=7.5)
        ax.invert_yaxis()
        if line is not None:
            ax.axvline(line, color=FAIL_COLOR, ls="--", lw=1, label=line_label)
            if line_label:
                ax.legend(fontsize=7.5, frameon=False, loc="lower right")
        if xlim:
            ax.set_xlim(*xlim)
        ax.set_xlabel(x_label)
        ax.grid(axis="y", visible=False)
        return to_svg(fig)


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[dict[str, Any]],
    *,
    y_label: str,
    ylim: tuple[float, float] | None = None,
    horizontal_labels: bool = False,
    log_y: bool = False,
    changes: Sequence[float | None] | None = None,
) -> str:
    """Bars per group, one colour per series: series [{label, values, color?}]. `changes`: a
    number written above each group (the last series against the first, in points), red where
    it is a loss, so that a few points lost stand out on a 0-100 axis."""
    n = len(series)
    width = 0.8 / max(n, 1)
    with figure(max(5.0, min(11.0, 1.2 + 0.45 * len(groups) * max(n, 1))), 3.4) as (fig, ax):
        for j, s in enumerate(series):
            xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
            vals = [float("nan") if v is None else v for v in s["values"]]
            ax.bar(
                xs,
                vals,
                width=width,
                label=s["label"],
                color=s.get("color", COLORS[j % len(COLORS)]),
                alpha=0.85,
            )
        if changes is not None:
            tops = [
                max((v for s in series if (v := s["values"][i]) is not None), default=0)
                for i in range(len(groups))
            ]
            for i, c in enumerate(changes):
                if c is None:
                    continue
                color = FAIL_COLOR if c <= -0.5 else PASS_COLOR if c >= 0.5 else "#555555"
                ax.text(i, tops[i] + 1.5, f"{c:+.1f}", ha="center", va="bottom", fontsize=7,
                        color=color)  # fmt: skip
        ticks = [short(g, 30) for g in groups]
        flat = horizontal_labels and max((len(t) for t in ticks), default=0) * len(ticks) <= 60
        ax.set_xticks(
            range(len(groups)),
            ticks,
            rotation=0 if flat else 30,
            ha="center" if flat else "right",
            fontsize=7.5,
        )
        ax.set_ylabel(y_label)
        if log_y:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        if ylim:
            ax.set_ylim(*ylim)
        if n > 1:  # above the axes: inside, it would cover the tallest bars
            ax.legend(fontsize=7.5, frameon=False, ncol=n, loc="lower left",
                      bbox_to_anchor=(0.0, 1.01), borderaxespad=0)  # fmt: skip
        ax.grid(axis="x", visible=False)
        return to_svg(fig)


def confusion(
    matrices: Sequence[tuple[str, Sequence[Sequence[int]]]], labels: Sequence[str]
) -> str:
    """Confusion matrices side by side (rows: true class, columns: predicted), rows normalized."""
    import numpy as np

    k = len(labels)
    n = len(matrices)
    side = min(4.6, 1.4 + 0.32 * k)
    with figure(side * n + 0.8, side, ncols=n, squeeze=False) as (fig, axes):
        image = None
        for ax, (title, m) in zip(axes.flat, matrices, strict=True):
            a = np.asarray(m, dtype=float)
            rows = a.sum(axis=1, keepdims=True)
            share = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
            image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            if k <= 15:
                for i in range(k):
                    for j in range(k):
                        if a[i, j]:
                            ax.text(
                                j,
                                i,
                                f"{int(a[i, j])}",
                                ha="center",
                                va="center",
                                fontsize=6.5,
                                color="white" if share[i, j] > 0.5 else "black",
                            )
            ticks = [short(lb, 14) for lb in labels]
            ax.set_xticks(range(k), ticks, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(k), ticks, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(title, fontsize=9)
            ax.grid(False)
        if image is not None:
            fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="share of the true class")
        return to_svg(fig)


def distributions(names: Sequence[str], samples: Sequence[Sequence[float]], *, x_label: str) -> str:
    """One violin per model (horizontal), with its p50 marked and the runs as dots."""
    import numpy as np

    with figure(7.5, 0.9 + 0.7 * len(names)) as (fig, ax):
        raw = [np.asarray(s, dtype=float) for s in samples]
        positive = np.concatenate(raw) if raw else np.zeros(0)
        positive = positive[positive > 0]
        # A long tail (a busy machine) would squeeze every shape against the axis: log scale.
        log = positive.size > 1 and positive.max() / positive.min() > 20
        data = [np.log10(np.clip(d, positive.min(), None)) for d in raw] if log else raw
        parts = ax.violinplot(
            data, positions=range(len(data)), vert=False, showextrema=False, widths=0.8
        )
        for i, body in enumerate(parts["bodies"]):
            body.set_facecolor(COLORS[i % len(COLORS)])
            body.set_alpha(0.45)
        rng = np.random.default_rng(0)
        for i, d in enumerate(data):
            jitter = rng.uniform(-0.12, 0.12, size=d.size)
            ax.scatter(d, i + jitter, s=4, color=COLORS[i % len(COLORS)], alpha=0.6, lw=0)
            p50 = float(np.median(d))
            ax.plot([p50, p50], [i - 0.35, i + 0.35], color="black", lw=1.6)
            shown = 10**p50 if log else p50
            ax.text(p50, i + 0.42, f"p50 {shown:.3g}", fontsize=7, ha="center")
        ax.set_yticks(range(len(names)), [short(n, 36) for n in names], fontsize=7.5)
        ax.invert_yaxis()
        if log:
            from matplotlib.ticker import FuncFormatter, MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10**v:g}"))
            x_label += " (log scale)"
        ax.set_xlabel(x_label)
        ax.grid(axis="y", visible=False)
        return to_svg(fig)


def intervals(
    labels: Sequence[str],
    values: Sequence[float],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    *,
    x_label: str,
    reference: float | None = None,
    reference_label: str | None = None,
    limit: float | None = None,
    limit_label: str | None = None,
    colors: Sequence[str] | None = None,
) -> str:
    """A point with its interval per label; `reference` (e.g. ratio 1, change 0) and `limit` (a
    tolerance) drawn as vertical lines."""
    with figure(7.5, 0.9 + 0.45 * len(labels)) as (fig, ax):
        for i, (v, lo, hi) in enumerate(zip(values, lows, highs, strict=True)):
            color = colors[i] if colors else COLORS[i % len(COLORS)]
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [i, i], color=color, lw=3, alpha=0.6, solid_capstyle="butt")
                ax.plot([lo, lo], [i - 0.15, i + 0.15], color=color, lw=1.2)
                ax.plot([hi, hi], [i - 0.15, i + 0.15], color=color, lw=1.2)
            ax.plot([v], [i], marker="o", color=color, ms=6)
            ax.text(v, i - 0.28, f"{v:.3g}", fontsize=7.5, ha="center")
        if reference is not None:
            ax.axvline(reference, color="#555555", lw=1, label=reference_label)
        if limit is not None:
            ax.axvline(limit, color=FAIL_COLOR, lw=1.2, ls="--", label=limit_label)
        ax.set_yticks(range(len(labels)), [short(lb, 48) for lb in labels], fontsize=7.5)
        ax.set_ylim(len(labels) - 0.5, -0.7)
        ax.margins(x=0.15)
        ax.set_xlabel(x_label)
        if reference_label or limit_label:
            ax.legend(fontsize=7.5, frameon=False, loc="best")
        ax.grid(axis="y", visible=False)
        return to_svg(fig)
