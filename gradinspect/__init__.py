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
    "flow",
    "inspect_flow",
    "inspect_gradients",
    "list_layers",
    "load_model",
    "verify",
    "GradinspectError",
]

if TYPE_CHECKING:
    from gradinspect.artifacts.loading import load_model
    from gradinspect.commands.check import assert_healthy, check
    from gradinspect.commands.flow import inspect_flow
    from gradinspect.commands.flow import inspect_flow as flow
    from gradinspect.commands.grad import inspect_gradients
    from gradinspect.commands.layers import list_layers
    from gradinspect.commands.verify import verify
    from gradinspect.errors import GradinspectError


def __getattr__(name: str) -> Any:
    # Lazy so that `import gradinspect` (and `gradinspect --help`) stays instant.
    if name in ("check", "assert_healthy"):
        from gradinspect.commands import check

        return getattr(check, name)
    if name == "verify":
        from gradinspect.commands.verify import verify

        return verify
    if name == "inspect_gradients":
        from gradinspect.commands.grad import inspect_gradients

        return inspect_gradients
    if name in ("inspect_flow", "flow"):  # flow: the name of the command
        from gradinspect.commands.flow import inspect_flow

        return inspect_flow
    if name == "list_layers":
        from gradinspect.commands.layers import list_layers

        return list_layers
    if name == "load_model":
        from gradinspect.artifacts.loading import load_model

        return load_model
    if name == "GradinspectError":
        from gradinspect.errors import GradinspectError

        return GradinspectError
    raise AttributeError(f"module 'gradinspect' has no attribute {name!r}")
