"""Everything about a model file, and nothing about gradients.

Owns: detecting the format and reading configs and weights without TensorFlow (``formats``,
``config_walk`` into a ``config_graph``, ``weights``, ``shapes``, ``savedmodel_static``), the
private copy that is scanned and loaded (``snapshot``), the safety scans and their allow-lists (``scan``, ``graphscan``,
``allowlists``, ``protos``), resource bounds (``limits``), the loaders and custom objects
(``loading``, ``custom_objects``) and the structure of a loaded model (``live``).

Must not import: ``gradinspect.engine``, ``gradinspect.commands``, ``gradinspect.render``,
``gradinspect.cli``. May import ``gradinspect.report`` and ``gradinspect.errors``.
"""
