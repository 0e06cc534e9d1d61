"""Click wiring only: options -> one core call -> one renderer -> stdout or --output.

``main`` is the group (:mod:`gradinspect.cli.group`); the command modules register their commands
on it when imported here.
"""

from __future__ import annotations

from gradinspect.cli import commands, flow  # noqa: F401  (registration)
from gradinspect.cli.group import INTERNAL_ERROR_EXIT, main

__all__ = ["INTERNAL_ERROR_EXIT", "main"]
