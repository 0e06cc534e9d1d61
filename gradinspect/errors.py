"""One exception tree: everything the core raises on purpose is a GradinspectError."""

from __future__ import annotations


class GradinspectError(Exception):
    """An expected failure, reported to the user as one line.

    ``exit_code`` follows the grep/diff convention: 2 for trouble (bad flags, an unreadable,
    unsafe or unsupported file, bad input data, a resource limit). A check that ran and failed
    is not an error: ``check`` and ``verify`` return a report whose ``passed`` is False (exit 1).
    """

    exit_code = 2


class ModelFileError(GradinspectError):
    """The model path is missing, unreadable, corrupt or not a supported format."""


class UnsafeModelError(GradinspectError):
    """The model's configuration would run code that is not part of Keras/TensorFlow."""


class ModelLoadError(GradinspectError):
    """Every loader that may read this format refused the file."""


class CustomObjectsError(GradinspectError):
    """The ``--custom-objects`` file could not be imported."""


class InputDataError(GradinspectError):
    """The input data is unreadable or does not fit the model."""


class LayerNameError(GradinspectError):
    """A layer name that the model does not have."""


class GradientError(GradinspectError):
    """The forward or backward pass could not run (an unsupported loss, a shape error)."""


class OutputError(GradinspectError):
    """An output file could not be written."""


class UsageProblem(GradinspectError):
    """Options that do not fit together or a malformed option value, found by a command."""


class UnreadableFileError(GradinspectError):
    """A path that is not a regular file (a FIFO, a device, a directory) or cannot be opened."""


class ResourceLimitError(GradinspectError):
    """A file asks for more memory or disk than ``--max-memory`` allows."""


class BaselineError(GradinspectError):
    """A baseline file that cannot be read or does not belong to this run."""


class ExpressionError(GradinspectError):
    """An expression that is not in the language, or whose shapes do not fit."""


class ChildFailed(GradinspectError):
    """The child process died, was killed, or ran past ``--timeout``."""


class ChildError(GradinspectError):
    """An expected failure inside the child, carried over with its exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ChildBug(Exception):
    """An unexpected exception inside the child: a bug in gradinspect (exit 70), with its traceback."""

    def __init__(self, kind: str, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.traceback_text = traceback_text


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds the run (every ``finally`` cleans up), then exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
