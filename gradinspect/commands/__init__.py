"""One module per command (``layers``, ``grad``, ``check``, ``verify``): options in, a report out.

Each turns its options into work for the engine (or the artifacts, for ``layers``) and the
result into a report type of :mod:`gradinspect.report`. These functions are also the Python API.

Must not import: ``gradinspect.cli``, ``gradinspect.render``. May import
``gradinspect.engine``, ``gradinspect.artifacts``, ``gradinspect.report``,
``gradinspect.errors`` and ``gradinspect.destinations``.
"""
