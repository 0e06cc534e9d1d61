"""The gradient engine: data in, one forward pass under one tape, one backward call, entries out.

Owns: the user's data (``readers``, ``inputs``), capturing layer outputs (``capture``), losses
(``losses``), stage-2 expressions (``expressions``, ``stages``), gradient statistics
(``stats``), turning raw gradients into report entries (``entries``), and the passes through a
Keras model (``keras_pass``) or a SavedModel signature (``signatures``).

Must not import: ``gradinspect.commands``, ``gradinspect.render``, ``gradinspect.cli``. May
import ``gradinspect.artifacts``, ``gradinspect.report`` and ``gradinspect.errors``.
"""
