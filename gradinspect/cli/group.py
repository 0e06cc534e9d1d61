"""The ``gradinspect`` Click group: global flags, one-line errors and exit statuses, signals."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import click

from gradinspect import __version__
from gradinspect.cli.feedback import debugging
from gradinspect.errors import GradinspectError, Interrupted
from gradinspect.formatting import first_line

# An unexpected exception is a bug in gradinspect, not bad input (2) or a failed check (1).
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h)


def _interrupt(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while the command runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _Group(click.Group):
    """Every failure becomes one ``Error:`` line on stderr with its exit status, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        args = _globals_first(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            with _signals_unwind():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Interrupted as exc:
            _error("interrupted" if exc.signum == signal.SIGINT else "terminated")
            sys.exit(128 + exc.signum)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "gradinspect"
            _error(f"{exc.format_message()} (see '{where} --help')")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:
            _error("interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except GradinspectError as exc:
            if debugging():
                traceback.print_exc()
            _error(str(exc))
            ctx.exit(exc.exit_code)
        except Exception as exc:  # a bug: still one line, unless --debug asks for more
            if debugging():
                # A bug inside the TensorFlow child process carries the child's traceback.
                sys.stderr.write(getattr(exc, "traceback_text", None) or traceback.format_exc())
            detail = first_line(exc) if str(exc).strip() else ""
            kind = getattr(exc, "kind", type(exc).__name__)
            _error(
                f"internal error ({kind}{': ' + detail if detail else ''}); this is a bug in "
                "gradinspect: rerun with --debug and report the traceback"
            )
            ctx.exit(INTERNAL_ERROR_EXIT)


_GLOBAL_FLAGS = ("--debug", "--color", "--no-color")


def _globals_first(args: list[str]) -> list[str]:
    """The group's flags are accepted anywhere (``gradinspect grad --debug …``): moved to the front."""
    end = args.index("--") if "--" in args else len(args)
    found = [a for a in args[:end] if a in _GLOBAL_FLAGS]
    return found + [a for a in args[:end] if a not in _GLOBAL_FLAGS] + args[end:]


def _error(message: str) -> None:
    """The one error line; text from model files or options is made printable first."""
    from gradinspect.render.safetext import printable

    click.echo(f"Error: {printable(message)}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gradinspect")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error (for bug reports).")
@click.option(
    "--color/--no-color",
    default=None,
    help="Force colour on or off (default: on a terminal, unless NO_COLOR is set).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, color: bool | None) -> None:
    """Inspect per-layer gradients of saved Keras models.

    Reads Keras 3 `.keras`, legacy `.h5` (any Keras era) and TensorFlow SavedModel
    directories. Model files are scanned before loading and never run code unless
    you pass --unsafe.

    Exit status: 0 success, 1 a check failed, 2 trouble (bad flags, an unreadable,
    unsafe or unsupported file, bad input data). --debug, --color and --no-color may
    also be given after the command.

    \b
    Example:
      gradinspect layers sample_models/mlp.keras
    """
    from gradinspect.cli.isolation import private_config_dirs

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["color"] = color
    private_config_dirs()
