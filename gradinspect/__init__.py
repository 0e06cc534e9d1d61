"""gradinspect: inspect per-layer gradients of saved Keras models.

The Python API mirrors the CLI: each call returns the frozen report object the CLI renders.
TensorFlow is imported only by the calls that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "assert_healthy",
    "check",
    "inspect_gradients",
    "list_layers",
    "load_model",
    "verify",
    "GradinspectError",
]

if TYPE_CHECKING:
    from gradinspect.checks import assert_healthy, check
    from gradinspect.errors import GradinspectError
    from gradinspect.gradients import inspect_gradients
    from gradinspect.listing import list_layers
    from gradinspect.loading import load_model
    from gradinspect.verification import verify


def __getattr__(name: str) -> Any:
    # Lazy so that `import gradinspect` (and `gradinspect --help`) stays instant.
    if name in ("check", "assert_healthy"):
        from gradinspect import checks

        return getattr(checks, name)
    if name == "verify":
        from gradinspect.verification import verify

        return verify
    if name == "inspect_gradients":
        from gradinspect.gradients import inspect_gradients

        return inspect_gradients
    if name == "list_layers":
        from gradinspect.listing import list_layers

        return list_layers
    if name == "load_model":
        from gradinspect.loading import load_model

        return load_model
    if name == "GradinspectError":
        from gradinspect.errors import GradinspectError

        return GradinspectError
    raise AttributeError(f"module 'gradinspect' has no attribute {name!r}")
