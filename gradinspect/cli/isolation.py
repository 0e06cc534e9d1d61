"""TensorFlow work in a supervised child process: a model's graph cannot hang, crash or swell gradinspect.

An allow-list can refuse ops, not loops: a ``While`` whose condition is constant ``True`` is made
of allowed ops. So the CLI runs every command's core call (the load, the passes) in a child
process (``python -m gradinspect.cli.isolation``) and only supervises it:

* the child gets ``--timeout`` seconds of wall-clock time (then its process group is killed),
  an address space of what TensorFlow itself maps plus ``--max-memory`` (set right after the
  import), a bound on the size of any file it writes (``--max-disk``) and a CPU-time backstop;
* the request and the report travel as pickles through files in a private 0700 directory, which
  is also the child's ``TMPDIR`` (its private copy of the model lives there), so whatever the
  child did, the parent removes everything it left;
* the parent writes every output, after the child reported success; a child that died, was
  killed or ran out of time is one ``Error:`` line (exit 2).

``GRADINSPECT_IN_PROCESS=1`` runs the call in the gradinspect process instead (no timeout and no
address-space limit): for debugging with a debugger, and for the test suite's in-process runs.
The child is not a sandbox: it runs as the user, and a pickle it returns is trusted like the
gradinspect code it runs.
"""

from __future__ import annotations

import atexit
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradinspect.cli.feedback import debugging
from gradinspect.errors import ChildBug, ChildError, ChildFailed, GradinspectError

DEFAULT_TIMEOUT = 600.0
# Room above what TensorFlow maps at import for thread stacks and allocator arenas of the run.
_ADDRESS_SLACK = 256 * 1024**2


@dataclass(frozen=True)
class ChildLimits:
    """What the child may use: seconds of wall-clock time (None: no limit), ``--max-memory`` bytes
    (None: the default) and the largest file it may write, in bytes."""

    timeout: float | None
    max_memory: int | None
    max_disk: int


@dataclass(frozen=True)
class _Request:
    call: Callable[..., Any]
    kwargs: dict[str, Any]
    limits: ChildLimits
    progress_label: str | None
    quiet: bool


def in_process() -> bool:
    return os.environ.get("GRADINSPECT_IN_PROCESS") == "1"


def run_isolated(
    call: Callable[..., Any],
    kwargs: dict[str, Any],
    limits: ChildLimits,
    what: str,
    label: str | None,
    quiet: bool = False,
) -> Any:
    """``call(**kwargs)`` in a supervised child (see the module); its return value.

    ``what`` names the model in messages; ``label`` is the progress display's unit (None: the call
    takes no ``progress``)."""
    request = _Request(call, kwargs, limits, label, quiet)
    if in_process():
        return _run(request)
    workspace = Path(tempfile.mkdtemp(prefix="gradinspect-run-"))
    try:
        return _supervise(request, workspace, what)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def private_config_dirs() -> None:
    """Keras writes ``$KERAS_HOME/keras.json`` (default ``~/.keras``) and matplotlib its font cache
    (``~/.cache``, ``~/.config``) when imported: a run on files nobody reviewed writes nothing into
    the user's home, so each gets a directory of the run's own, removed at exit, unless the user set
    ``KERAS_HOME`` or ``MPLCONFIGDIR``. The child inherits them."""
    wanted = [name for name in ("KERAS_HOME", "MPLCONFIGDIR") if name not in os.environ]
    if not wanted:
        return
    home = tempfile.mkdtemp(prefix="gradinspect-config-")
    atexit.register(shutil.rmtree, home, True)
    for name in wanted:
        os.environ[name] = os.path.join(home, name.lower())


def _supervise(request: _Request, workspace: Path, what: str) -> Any:
    (workspace / "request.pickle").write_bytes(pickle.dumps(request))
    env = {**os.environ, "TMPDIR": str(workspace), "MALLOC_ARENA_MAX": "2"}
    # The child's file descriptors 1 and 2 (TensorFlow's C++ logs, a crash's stack trace) go to a
    # log shown only with --debug; Python-level feedback (the progress display) gets the terminal.
    terminal = os.dup(sys.stderr.fileno()) if _has_fileno(sys.stderr) else None
    if terminal is not None:
        env["GRADINSPECT_FEEDBACK_FD"] = str(terminal)
    log = workspace / "child.log"
    try:
        with open(log, "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "gradinspect.cli.isolation", str(workspace)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                pass_fds=(terminal,) if terminal is not None else (),
                start_new_session=True,  # its own process group: killed whole, and no terminal signals
            )
    finally:
        if terminal is not None:
            os.close(terminal)
    try:
        status = _wait(child, request.limits.timeout)
    finally:
        if child.poll() is None:
            _kill(child)
    if status != 0 and debugging():
        sys.stderr.write(log.read_text(errors="replace"))
    if status is None:
        raise ChildFailed(
            f"{what}: the run passed --timeout {request.limits.timeout:g}s and was stopped (a model's graph can "
            "loop forever); pass --timeout SECONDS to allow longer, or --timeout 0 for no limit"
        )
    result = workspace / "result.pickle"
    if status != 0 or not result.is_file():
        raise ChildFailed(_death(what, status, request.limits))
    return _outcome(pickle.loads(result.read_bytes()))


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _wait(child: subprocess.Popen[bytes], timeout: float | None) -> int | None:
    """The child's exit status (negative: killed by that signal), or None when it ran past ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return child.wait(timeout=None if left is None else min(left, 0.5))
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                return None


def _kill(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def _death(what: str, status: int, limits: ChildLimits) -> str:
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.Signals._value2member_map_ else str(-status)
        memory = ""
        if -status in (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS):
            memory = " (or the run needed more memory than --max-memory allows)"
        if -status == signal.SIGXCPU:
            return f"{what}: the run used more CPU time than --timeout allows and was stopped"
        if -status == signal.SIGXFSZ:
            return f"{what}: the run tried to write a file larger than --max-disk and was stopped"
        return (
            f"{what}: the run was killed by signal {-status} ({name}) inside TensorFlow: the model's graph may be "
            f"malicious or corrupt{memory}; nothing was written"
        )
    return f"{what}: the TensorFlow process ended with status {status} before it reported a result"


def _outcome(result: tuple[str, Any]) -> Any:
    kind, payload = result
    if kind == "ok":
        return payload
    if kind == "error":
        message, exit_code = payload
        raise ChildError(message, exit_code)
    raise ChildBug(*payload)


# --- the child side -----------------------------------------------------------------------------


def _run(request: _Request) -> Any:
    from gradinspect.artifacts.limits import memory_limit
    from gradinspect.cli.feedback import progress_bar

    with memory_limit(request.limits.max_memory):
        if request.progress_label is None:
            return request.call(**request.kwargs)
        with progress_bar(request.progress_label, request.quiet) as progress:
            result = request.call(progress=progress, **request.kwargs)
    sink = request.kwargs.get("sink")
    if sink is not None and not in_process():
        sink.close()  # the parent renames the staged file: it must be complete on disk
    return result


def _child(workspace: Path) -> int:
    request: _Request = pickle.loads((workspace / "request.pickle").read_bytes())
    feedback = os.environ.pop("GRADINSPECT_FEEDBACK_FD", None)
    if feedback is not None:
        sys.stderr = open(int(feedback), "w", buffering=1, closefd=False)  # noqa: SIM115
    _limit(resource.RLIMIT_FSIZE, request.limits.max_disk)
    if request.limits.timeout:
        # A backstop for a child whose parent is gone: CPU seconds, on every core.
        _limit(resource.RLIMIT_CPU, int(request.limits.timeout * (os.cpu_count() or 1)) + 30)
    try:
        _limit_address_space(request.limits.max_memory)
        outcome: tuple[str, Any] = ("ok", _run(request))
    except GradinspectError as exc:
        outcome = ("error", (str(exc), exc.exit_code))
    except MemoryError:
        outcome = ("error", ("the run ran out of the memory --max-memory allows", 2))
    except Exception as exc:
        outcome = _bug_or_memory(exc)
    data = pickle.dumps(outcome)
    tmp = workspace / "result.pickle.tmp"
    tmp.write_bytes(data)
    tmp.rename(workspace / "result.pickle")
    return 0


def _bug_or_memory(exc: Exception) -> tuple[str, Any]:
    import traceback

    from gradinspect.formatting import first_line

    if type(exc).__name__ == "ResourceExhaustedError":  # TensorFlow's allocator hit the address-space limit
        return "error", (f"the run ran out of the memory --max-memory allows ({first_line(exc, 200)})", 2)
    return "bug", (type(exc).__name__, str(exc), traceback.format_exc())


def _limit(kind: int, value: int) -> None:
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, hard))


def _limit_address_space(max_memory: int | None) -> None:
    """Import TensorFlow, then cap the address space at what it maps plus ``max_memory``."""
    from gradinspect.artifacts import limits
    from gradinspect.artifacts.loading import quiet_tensorflow

    quiet_tensorflow("keras")
    mapped = _mapped_bytes()
    if mapped:
        budget = max_memory if max_memory is not None else limits.default_max_memory()
        _limit(resource.RLIMIT_AS, mapped + budget + _ADDRESS_SLACK)


def _mapped_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(_child(Path(sys.argv[1])))
