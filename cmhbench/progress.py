"""Progress for the command line (a :class:`~cmhbench.interfaces.Progress`): rich bars on a
terminal, plain timestamped lines in logs (nohup, batch schedulers: stderr not a terminal)."""

from __future__ import annotations

import datetime as _dt
import math
import sys
import time
from typing import Any, Iterable, Iterator, Optional, TextIO, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


class RichProgress:
    """Shows one bar per ``track`` call while it runs, under a live display on ``console``.

    Bars disappear when their loop ends, so the terminal keeps only the run's log lines and table.
    """

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self._progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self.prefix = ""

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def track(self, iterable: Iterable[T], total: Optional[int], description: str) -> Iterator[T]:
        """Yield from ``iterable`` while advancing a bar of ``total`` steps."""
        task = self._progress.add_task(f"{self.prefix}{description}", total=total)
        try:
            for item in iterable:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)


class PlainProgress:
    """Progress as plain lines, each starting with the local time, for logs.

    ``track`` writes a line about every tenth of its ``total`` steps and one at the end, never
    one per step; ``line`` writes any other line (run started, finished, failed). Each line is
    one write to ``stream`` (default: ``sys.stderr`` at the time of writing), so lines from
    several processes sharing the stream do not interleave.
    """

    def __init__(self, stream: Optional[TextIO] = None, prefix: str = "", blocks: int = 10) -> None:
        self.stream = stream
        self.prefix = prefix
        self.blocks = blocks

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def line(self, text: str) -> None:
        """Write ``text`` as one timestamped line."""
        stream = self.stream or sys.stderr
        stream.write(f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        stream.flush()

    def track(self, iterable: Iterable[T], total: Optional[int], description: str) -> Iterator[T]:
        """Yield from ``iterable``, writing a line per block of about a tenth of ``total`` steps."""
        step = max(1, math.ceil(total / self.blocks)) if total else 0
        started = time.perf_counter()
        done = reported = 0
        for item in iterable:
            yield item
            done += 1
            if step and (done % step == 0 or done == total):
                self._block(description, done, total, started)
                reported = done
        if done != reported:
            self._block(description, done, total, started)

    def _block(self, description: str, done: int, total: Optional[int], started: float) -> None:
        of = f"/{total}" if total else ""
        self.line(f"{self.prefix}{description} {done}{of} ({time.perf_counter() - started:.1f} s)")


def run_label(request: Any) -> str:
    """One line naming a run of one code length (a :class:`~cmhbench.runner.RunRequest`):
    dataset, protocol if set, teacher -> strategy -> student, bits, seed, the teacher's code length
    when asked for, and ``--set`` overrides."""
    parts = [request.dataset]
    if request.protocol:
        parts.append(f"protocol {request.protocol}")
    if request.student == "none":
        parts.append(f"{request.teacher} (teacher alone)")
    elif request.teacher == "none":
        parts.append(f"{request.strategy} -> {request.student}")
    else:
        parts.append(f"{request.teacher} -> {request.strategy} -> {request.student}")
    parts.append(f"{request.bits[0]} bits seed {request.seed}")
    if getattr(request, "teacher_bits", None) is not None:
        parts.append(f"teacher {request.teacher_bits} bits")
    parts.extend(f"{key}={value}" for key, value in request.overrides)
    return " ".join(parts)


def run_line(kind: str, request: Any, seconds: float = 0.0, status: str = "done", error: Optional[str] = None) -> str:
    """The log line of a run that ``started``, ``finished`` (with its status and seconds) or ``failed``."""
    label = run_label(request)
    if kind == "started":
        return f"started {label}"
    if kind == "finished":
        return f"finished {label} ({status}, {seconds:.1f} s)"
    return f"failed {label}: {error}"
