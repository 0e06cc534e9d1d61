"""The safety scan of a Keras configuration: every class, function and op layer it names, against allow-lists.

Runs on the JSON alone (no TensorFlow). A config is refused when it names anything that is
not on an allow-list of :mod:`gradinspect.artifacts.allowlists` and not registered by the user's
``--custom-objects`` file: a Lambda, a class or function from outside Keras, an unknown class
name (custom code in a Keras 2 config), an op layer calling a TF symbol that is not pure tensor
math, or an op layer given a constant argument that is not a number, a shape or a known word.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradinspect.artifacts import allowlists
from gradinspect.errors import UnsafeModelError

if TYPE_CHECKING:
    from gradinspect.artifacts.formats import Artifact

_CONSTANT = "_CONSTANT_VALUE"
# Where a config keeps what compile() was given: never deserialized when gradinspect loads a model.
_COMPILE_KEYS = frozenset({"compile_config", "training_config"})


@dataclass(frozen=True)
class Finding:
    """One reason the configuration is unsafe to load."""

    layer: str
    reason: str


def scan_config(artifact: Artifact, registered: frozenset[str] = frozenset()) -> list[Finding]:
    """Every reason to refuse ``artifact``'s configuration (empty when it is safe to load).

    ``registered`` holds the class/function names (and ``package>name`` registered names) the
    user made available through ``--custom-objects``; those are allowed.
    """
    findings: list[Finding] = []
    roots: list[Any] = [artifact.config] if artifact.config is not None else []
    roots.extend(artifact.metadata_nodes)
    names = frozenset(_strings_under(roots, "name"))
    scanner = _Scanner(registered, names, findings)
    for root in roots:
        # The model itself is not a layer: its name does not prefix its layers' names.
        is_model = root is artifact.config or root.get("_node_path") == "root"
        scanner.scan(root, "(model)", named=not is_model)
    if artifact.training_config is not None:
        # Never deserialized (models load with compile=False); only code in it is refused.
        _Scanner(registered, names, findings, code_only=True).scan(artifact.training_config, "(training config)")
    unique: dict[tuple[str, str], Finding] = {}
    for f in findings:
        unique.setdefault((f.layer, f.reason), f)
    return list(unique.values())


def ensure_safe(artifact: Artifact, registered: frozenset[str] = frozenset(), unsafe: bool = False) -> None:
    """Raise UnsafeModelError naming the first offending layer, unless ``unsafe``."""
    if unsafe:
        return
    findings = scan_config(artifact, registered)
    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise UnsafeModelError(
            f"{artifact.path}: refused to load: layer {first.layer!r} {first.reason}{more}; "
            "pass --custom-objects FILE.py to register trusted custom classes, "
            "or --unsafe if you trust this file and accept that it may run code"
        )


def _strings_under(node: Any, key: str) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _strings_under(item, key)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                yield v
            else:
                yield from _strings_under(v, key)


class _Scanner:
    def __init__(
        self, registered: frozenset[str], names: frozenset[str], out: list[Finding], code_only: bool = False
    ) -> None:
        self.registered = registered
        self.names = names
        self.out = out
        self.code_only = code_only

    def scan(self, node: Any, layer: str, named: bool = True) -> None:
        if isinstance(node, list):
            for item in node:
                self.scan(item, layer)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        inner = node.get("config")
        if isinstance(class_name, str):
            name = _layer_name(node, inner)
            if named and name is not None and class_name not in ("function", "__keras_tensor__"):
                layer = name if layer == "(model)" else f"{layer}/{name}"
            reason = self._reason(node, class_name, inner)
            if reason:
                self.out.append(Finding(layer, reason))
        elif node.get("function_type") == "lambda" or "function" in node and node.get("function_type") == "raw":
            self.out.append(Finding(layer, "holds serialized Python code (a Lambda function)"))
        for key, value in node.items():
            if key in _COMPILE_KEYS:
                _Scanner(self.registered, self.names, self.out, code_only=True).scan(value, f"{layer} ({key})")
            elif key not in ("registered_name", "module", "class_name"):
                self.scan(value, layer)

    def _reason(self, node: dict[str, Any], class_name: str, inner: Any) -> str | None:
        if class_name == "Lambda":
            return (
                None if "Lambda" in self.registered else "is a Lambda layer, whose Python code would run while loading"
            )
        if class_name == "__lambda__":
            return "holds a serialized Python lambda, which would run while loading"
        if self.code_only:
            # Compile-time objects (losses, metrics, optimizers) are never deserialized: models load
            # with compile=False. A name there is data; only serialized code is refused.
            return None
        vocabulary = inner.get("vocabulary") if isinstance(inner, dict) else None
        if isinstance(vocabulary, str):
            # StringLookup/IntegerLookup/TextVectorization open such a path while they are built:
            # a FIFO hangs the process, /dev/zero fills memory. An inline list is data.
            return (
                f"reads its vocabulary from the file {vocabulary[:200]!r}; gradinspect opens no file a model "
                "names (save the model with the vocabulary inline)"
            )
        registered_name = node.get("registered_name")
        if class_name in self.registered or (isinstance(registered_name, str) and registered_name in self.registered):
            return None
        if class_name == "function" and isinstance(inner, str) and inner in self.registered:
            return None
        if isinstance(registered_name, str) and ">" in registered_name:
            return f"uses the custom object {registered_name!r}, which is not part of Keras/TensorFlow"
        if "module" in node:
            reason = _module_reason(node.get("module"), class_name, inner)
            if reason:
                return reason
        if class_name in allowlists.OP_LAYERS:
            return _op_layer_reason(class_name, inner) or self._constants_reason(node.get("inbound_nodes"))
        if class_name == "function":
            if isinstance(inner, str) and inner not in allowlists.keras_functions():
                return f"names the function {inner!r}, which is not a Keras activation, loss or metric"
            return None
        if not _known_class(class_name):
            return (
                f"uses the class {class_name!r}, which is not a Keras/TensorFlow class "
                "(custom code: register it with --custom-objects)"
            )
        return None

    def _constants_reason(self, nodes: Any) -> str | None:
        """The first constant argument of an op layer that is not a number, shape or known word."""
        for value, key in _leaves(nodes, None):
            if value is None or isinstance(value, (bool, int, float)):
                continue
            if isinstance(value, str) and (
                value == _CONSTANT
                or value in self.names
                or value in allowlists.CONSTANT_WORDS
                or allowlists.EINSUM_EQUATION.fullmatch(value)
                or key == "name"
                and len(value) <= 200
            ):
                continue
            shown = repr(value)[:60]
            return f"passes the constant argument {shown} to its op; only numbers, shapes and dtype names are allowed"
        return None


def _known_class(class_name: str) -> bool:
    if class_name.startswith(allowlists.BUILTIN_REGISTERED_PREFIX):
        class_name = class_name[len(allowlists.BUILTIN_REGISTERED_PREFIX) :]
    return class_name in allowlists.keras_classes() or class_name in allowlists.KERAS_VALUE_MARKERS


def _leaves(node: Any, key: str | None) -> Iterator[tuple[Any, str | None]]:
    if isinstance(node, list):
        for item in node:
            yield from _leaves(item, key)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, k)
    else:
        yield node, key


def _module_reason(module: Any, class_name: str, inner: Any) -> str | None:
    root = module.split(".", 1)[0] if isinstance(module, str) else None
    if root in allowlists.MODULE_ROOTS:
        return None
    where = f"from module {module!r}" if module else "with no module (defined in a script)"
    what = f"function {inner!r}" if class_name == "function" else f"class {class_name!r}"
    return f"uses {what} {where}, which is not part of Keras/TensorFlow"


def _op_layer_reason(class_name: str, inner: Any) -> str | None:
    cfg = inner if isinstance(inner, dict) else {}
    if class_name in ("TFOpLambda", "SlicingOpLambda"):
        symbol = cfg.get("function")
        if allowlists.tf_symbol_allowed(symbol):
            return None
        return f"is an op layer calling tf.{symbol}, which is not on the allow-list of pure tensor operations"
    if class_name == "ClassMethod":
        owner, method = cfg.get("cls_symbol"), cfg.get("method_name")
        if method in allowlists.CLASS_METHODS.get(owner if isinstance(owner, str) else "", ()):
            return None
        return f"is an op layer calling tf.{owner}.{method}, which is not on the allow-list of tensor constructors"
    attr = cfg.get("attr_name")
    if attr in allowlists.INSTANCE_MEMBERS:
        return None
    return f"is an op layer reading the tensor member {attr!r}, which is not on the allow-list"


def _layer_name(node: dict[str, Any], inner: Any) -> str | None:
    for source in (inner, node):
        name = source.get("name") if isinstance(source, dict) else None
        if isinstance(name, str):
            return name
    return None
