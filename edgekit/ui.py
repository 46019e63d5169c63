"""Console output for people: progress bars and tables on stderr/stdout via rich.

Library code reports progress through `progress()` and `info()`; both write to stderr so that
`--json` output on stdout stays machine-readable. Set EDGEKIT_QUIET=1 to silence them.

`doing()` / `step()` / `activity()` keep track of what is running ("distill epoch 7/40 (stage
1/3)"), so that an interrupt can say where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_console = None


def console():
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def quiet() -> bool:
    return os.environ.get("EDGEKIT_QUIET", "") not in ("", "0")


def info(message: str) -> None:
    """One line of progress information for people (stderr), also written to the run log."""
    if _log_files:
        import time

        stamp = time.strftime("%H:%M:%S")
        for f in list(_log_files):
            try:
                f.write(f"{stamp} {message}\n")
                f.flush()
            except OSError as e:  # a full disk: stop logging there and say so in one line
                _log_files.remove(f)
                from edgekit.errors import disk_full_from

                raise disk_full_from(e, f.name) or e from None
    if not quiet():
        console().print(message, markup=False)


def progress(items: Iterable[T], *, total: int | None = None, description: str = "") -> Iterator[T]:
    """Iterate with a progress bar on stderr (a plain line per 10% when stderr is not a terminal)."""
    with doing(description or "work"):
        yield from _progress(items, total=total, description=description)


def _progress(items: Iterable[T], *, total: int | None, description: str) -> Iterator[T]:
    if quiet():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not sys.stderr.isatty():
        step = max(1, -(-total // 10)) if total else 0  # about ten lines per loop
        n = 0
        for n, item in enumerate(items, 1):
            yield item
            if total and (n % step == 0 or n == total):
                info(f"{description}: {n}/{total}")
        if not total:
            info(f"{description}: {n} done")
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def render_table(
    rows: list[dict[str, Any]], columns: list[str] | None = None, title: str | None = None
) -> None:
    """Print a table to stdout."""
    from rich.console import Console
    from rich.table import Table

    columns = columns or (list(rows[0]) if rows else [])
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*[format_cell(r.get(c)) for c in columns])
    # Piped output (CI logs, files) has no width: do not squeeze a wide table into 80 columns.
    width = None if sys.stdout.isatty() else 200
    Console(highlight=False, soft_wrap=True, width=width).print(table)


def format_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 0.01 else f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


_log_files: list[Any] = []


def add_log_file(path: Any) -> Any:
    """Also append every info() line to `path` (the run log) until remove_log_file()."""
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115  (closed by remove_log_file)
    _log_files.append(handle)
    return handle


def remove_log_file(handle: Any) -> None:
    if handle in _log_files:
        _log_files.remove(handle)
    with contextlib.suppress(OSError):  # a full disk already said so
        handle.close()


# -- what is running (for the interrupt line) ---------------------------------------------------

_activities: list[list[str]] = []  # [what, where, detail], outermost first


@contextlib.contextmanager
def doing(what: str, where: str = "") -> Iterator[None]:
    """Mark `what` as running inside the block ("distill", where "stage 1/3")."""
    entry = [what, where, ""]
    _activities.append(entry)
    try:
        yield
    except KeyboardInterrupt:
        note_interrupt()  # the innermost block sees it first, with the whole stack
        raise
    finally:
        for i in range(len(_activities) - 1, -1, -1):
            if _activities[i] is entry:
                del _activities[i]
                break


def step(detail: str) -> None:
    """Say how far the innermost activity is ("epoch 7/40")."""
    if _activities:
        _activities[-1][2] = detail


_interrupted_at: list[str | None] = []
_signal: list[int] = []  # the SIGINT / SIGTERM this process received (the CLI's handler), if any


def signal_received(signum: int) -> None:
    """Record that the process received `signum` (the first one counts). The handler raises
    Interrupted as well, but Python swallows an exception raised while a `__del__` or a C
    callback runs; what is recorded here still stops the run (`pending_signal`)."""
    if not _signal:
        _signal.append(int(signum))


def pending_signal() -> int | None:
    """The signal this process received, or None."""
    return _signal[0] if _signal else None


def note_interrupt() -> None:
    """Remember what was running when an interrupt arrived (the first call counts)."""
    if not _interrupted_at:
        _interrupted_at.append(activity())


def interrupted_activity() -> str | None:
    """What was running when the interrupt arrived (else what runs now); forgets it."""
    seen = _interrupted_at[0] if _interrupted_at else activity()
    _interrupted_at.clear()
    return seen


def activity() -> str | None:
    """What is running now, outermost first: "distill epoch 7/40 (stage 1/3)"; None if nothing."""
    parts = []
    for what, where, detail in _activities:
        text = f"{what} {detail}".strip()
        parts.append(f"{text} ({where})" if where else text)
    return ": ".join(parts) or None
