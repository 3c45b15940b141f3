"""What every ``cmhbench`` sub-command shares: the consoles, one-line error reporting, the registry."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import typer
from rich.console import Console

from cmhbench.errors import CmhbenchError

PIPE_CLOSED_EXIT = 141  # the shell's status for SIGPIPE (128 + 13)


def silence_stdout() -> None:
    """The reader of stdout went away (``cmhbench ... | head``): point stdout at /dev/null, so
    that nothing more (the interpreter's final flush included) raises; the caller then exits
    quietly with :data:`PIPE_CLOSED_EXIT`, as ``cat`` would."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _Console(Console):
    """rich's console, ending quietly with :data:`PIPE_CLOSED_EXIT` when stdout's reader leaves."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        silence_stdout()
        raise SystemExit(PIPE_CLOSED_EXIT)


stdout = _Console(soft_wrap=True)
stderr = _Console(stderr=True, soft_wrap=True)
KINDS = ("teachers", "strategies", "students", "datasets")


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report :class:`CmhbenchError` (and any unexpected exception) as one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            silence_stdout()
            raise typer.Exit(PIPE_CLOSED_EXIT) from None
        except CmhbenchError as exc:
            if os.environ.get("CMHBENCH_DEBUG"):
                raise
            _fail(_one_line(str(exc)), exc.exit_code)
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("CMHBENCH_DEBUG"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))} (set CMHBENCH_DEBUG=1 for a traceback)", 1)

    return wrapper


def _one_line(text: str) -> str:
    """``text`` on one line (white space runs become one space)."""
    return " ".join(text.split()) or "(no message)"


def registry():
    """The registry of the current environment (imported late: ``--help`` stays fast)."""
    from cmhbench.plugins import get_registry

    return get_registry()
