"""What a long job is doing, on stderr: a transient progress display for terminals only."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool = False) -> Iterator[Callable[..., None] | None]:
    """What a long job is doing, on stderr, only when stderr is a terminal (never in logs or pipes)
    and only once the job has run for a second (short jobs print nothing); transient.

    Yields ``update(done, total, samples=None)`` for loops (with ``samples`` it shows samples/s);
    its ``phase(text)`` names the current step (loading, forward pass, …)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    rate = TextColumn("{task.fields[rate]}")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), rate)
    bar = Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = bar.add_task("starting", total=None, rate="")
    feedback = _Feedback(bar, task, label)
    timer = threading.Timer(_QUIET_SECONDS, bar.start)
    timer.daemon = True
    timer.start()
    try:
        yield feedback
    finally:
        timer.cancel()
        bar.stop()


_QUIET_SECONDS = 1.0  # jobs shorter than this show nothing


class _Feedback:
    """The callable :func:`progress_bar` yields: batch counts, and ``phase`` for the step running.
    The rate counts from the first batch done (loading the model is not part of it)."""

    def __init__(self, bar: Any, task: Any, label: str) -> None:
        self.bar, self.task, self.label = bar, task, label
        self.first: tuple[float, int] | None = None

    def __call__(self, done: int, total: int, samples: int | None = None) -> None:
        now = time.monotonic()
        speed = ""
        if samples and self.first is None:
            self.first = (now, samples)
        elif samples and self.first is not None and now > self.first[0]:
            speed = f"{(samples - self.first[1]) / (now - self.first[0]):,.0f} samples/s"
        self.bar.update(self.task, completed=done, total=total, rate=speed, description=self.label)

    def phase(self, text: str) -> None:
        self.bar.update(self.task, description=text)


def debugging() -> bool:
    """Whether the run shows tracebacks and the child's log: ``--debug`` (on the current Click
    context's root) or ``GRADINSPECT_DEBUG=1``."""
    import os

    import click

    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    return bool((root or {}).get("debug")) or os.environ.get("GRADINSPECT_DEBUG") == "1"
