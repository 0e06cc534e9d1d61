"""The gradient engine: data in, one forward pass under one tape, one backward call, entries out.

Owns: the user's data (``readers``, ``source``, ``targets``), the loss (``objective``, ``losses``),
stage-2 expressions (``expressions``, ``stages``), the one pass and its recording of layer outputs
(``passes``), the one pipeline (``runner``, ``pipeline``) and its fronts (``keras_pass``,
``graph_pass``, ``signatures``), batches (``streaming``, ``compiled``, ``distributed``), gradient
statistics (``stats``) and turning raw gradients into report entries (``entries``).

Must not import: ``gradinspect.commands``, ``gradinspect.render``, ``gradinspect.cli``. May
import ``gradinspect.artifacts``, ``gradinspect.report`` and ``gradinspect.errors``.
"""
