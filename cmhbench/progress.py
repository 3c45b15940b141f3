"""Rich progress bars for the command line (a :class:`~cmhbench.interfaces.Progress`)."""

from __future__ import annotations

from typing import Iterable, Iterator, Optional, TypeVar

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
