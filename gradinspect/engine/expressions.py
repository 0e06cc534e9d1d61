"""The safe expression language of ``--stage1``/``--stage2``: parsed with ``ast``, checked against a
whitelist, evaluated on tensors. Never ``eval``/``exec``.

Grammar: numbers, names (``act out grad y y0 y1 … target``), ``from.<var>``/``to.<var>``,
``+ - * / ** @``, unary minus, subscripts on tensors (``act[:, 0]``), and calls of the functions
in :data:`FUNCTIONS` (reductions take an optional ``axis=``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradinspect.engine.expression_backends import NUMPY, Backend, np_matmul, tf_backend
from gradinspect.errors import ExpressionError
from gradinspect.formatting import first_line
from gradinspect.formatting import shape as shape_text

BUILTIN_STAGE2 = {
    # The article's example 2, made shape-correct: g (like act) is mapped through the to-layer's
    # kernel so that it has the to-layer's output shape.
    "seed": "sum(out) + sum(matmul(grad, to.kernel) * out)",
    # The gradient-penalty form (WGAN-GP style).
    "grad-penalty": "(norm(grad) - 1) ** 2",
}
DEFAULT_STAGE1 = "sum(square(act))"

REDUCTIONS = frozenset({"sum", "mean", "norm"})
ELEMENTWISE = frozenset({"square", "sqrt", "abs", "exp", "log", "tanh", "relu", "stop_gradient"})
BINARY = frozenset({"matmul", "maximum", "minimum"})
FUNCTIONS = REDUCTIONS | ELEMENTWISE | BINARY | {"transpose"}
_FROM = "from_layer_"  # `from` is a Python keyword: `from.kernel` is rewritten before parsing


@dataclass(frozen=True)
class Expression:
    """A parsed, whitelisted expression and the text it came from."""

    text: str
    option: str
    tree: ast.Expression
    source: str  # the text as parsed (with `from.` rewritten)

    def names(self) -> set[str]:
        return {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name)} - FUNCTIONS

    def segment(self, node: ast.AST) -> str:
        text = ast.get_source_segment(self.source, node) or ast.unparse(node)
        return text.replace(_FROM + ".", "from.")


# An expression is a formula on a command line: these bound the recursion of parsing, checking
# and evaluating it (Python's own parser gives up with a RecursionError near 200 levels).
_MAX_LENGTH = 4000
_MAX_DEPTH = 64


def parse(text: str, option: str, allowed_names: set[str]) -> Expression:
    """Parse and check ``text``; raise ExpressionError pointing at the offending part."""
    if len(text) > _MAX_LENGTH:
        raise ExpressionError(f"{option}: the expression is {len(text):,} characters; at most {_MAX_LENGTH:,}")
    source = re.sub(r"\bfrom\s*\.", _FROM + ".", text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        col = (exc.offset or 1) - 1
        raise ExpressionError(f"{option} {text!r}: not a valid expression (syntax error at column {col + 1})") from None
    except (RecursionError, MemoryError):
        tree = None
    if tree is None or _depth(tree) > _MAX_DEPTH:
        raise ExpressionError(
            f"{option}: the expression nests or chains more than {_MAX_DEPTH} levels deep; split it or use sum()"
        )
    source = source.strip()
    expr = Expression(text, option, tree, source)
    _check(expr, tree.body, allowed_names)
    return expr


def _depth(tree: ast.AST) -> int:
    """The depth of ``tree``, found without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _refuse(expr: Expression, node: ast.AST, why: str) -> ExpressionError:
    col = getattr(node, "col_offset", 0)
    return ExpressionError(f"{expr.option} {expr.text!r}: {why}: {expr.segment(node)!r} (column {col + 1})")


def _check(expr: Expression, node: ast.AST, allowed: set[str]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _refuse(expr, node, "only numbers are allowed as constants")
        return
    if isinstance(node, ast.Name):
        if node.id.startswith("_") or node.id not in allowed:
            names = ", ".join(sorted(allowed))
            raise _refuse(expr, node, f"unknown name (known: {names}, from.<var>, to.<var>)")
        return
    if isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id in (_FROM, "to")) or node.attr.startswith("_"):
            raise _refuse(expr, node, "attribute access is allowed only as from.<variable> or to.<variable>")
        return
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.MatMult)):
            raise _refuse(expr, node, "operator not allowed (use + - * / ** @)")
        _check(expr, node.left, allowed)
        _check(expr, node.right, allowed)
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise _refuse(expr, node, "only unary minus is allowed")
        _check(expr, node.operand, allowed)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise _refuse(expr, node, f"calls are allowed only to {', '.join(sorted(FUNCTIONS))}")
        name = node.func.id
        arity = 2 if name in BINARY else 1
        if len(node.args) != arity or any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse(expr, node, f"{name}() takes {arity} argument{'s' if arity > 1 else ''}")
        for kw in node.keywords:
            if kw.arg != "axis" or name not in REDUCTIONS:
                raise _refuse(
                    expr, node, f"{name}() takes no keyword {kw.arg or '**'!r} (only sum/mean/norm take axis=)"
                )
            _axis(expr, kw.value)
        for arg in node.args:
            _check(expr, arg, allowed)
        return
    if isinstance(node, ast.Subscript):
        _check(expr, node.value, allowed)
        _index(expr, node.slice)
        return
    raise _refuse(expr, node, f"{type(node).__name__} is not part of the expression language")


def _int_constant(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool)


def _axis(expr: Expression, node: ast.AST) -> None:
    if _int_constant(node):
        return
    if isinstance(node, ast.Tuple) and node.elts and all(_int_constant(e) for e in node.elts):
        return
    raise _refuse(expr, node, "axis= must be an integer or a tuple of integers")


def _index(expr: Expression, node: ast.AST) -> None:
    parts = node.elts if isinstance(node, ast.Tuple) else [node]
    for part in parts:
        if _int_constant(part):
            continue
        if isinstance(part, ast.Slice) and all(
            p is None or _int_constant(p) for p in (part.lower, part.upper, part.step)
        ):
            continue
        raise _refuse(expr, part, "subscripts take integers and slices only")


def _const(node: ast.AST) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_const(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return -_const(node.operand)
    if isinstance(node, ast.Slice):
        return slice(*(None if p is None else _const(p) for p in (node.lower, node.upper, node.step)))
    return getattr(node, "value", None)


# --- evaluation ---------------------------------------------------------------------------


_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow", ast.MatMult: "matmul"}


def evaluate(expr: Expression, env: dict[str, Any], variables: dict[str, dict[str, Any]]) -> Any:
    """Evaluate on TensorFlow tensors. ``variables`` maps ``from``/``to`` to {name: variable}."""
    return _Evaluator(expr, env, variables, tf_backend()).eval(expr.tree.body)


def check_shapes(
    expr: Expression, shapes: dict[str, tuple[Any, ...]], variables: dict[str, dict[str, tuple[Any, ...]]]
) -> tuple[Any, ...]:
    """The result's shape, computed on zero arrays of the operands' shapes before any tensor work.

    Raises ExpressionError naming the two operands, their shapes and a way to make them fit.
    """
    env = {k: np.zeros(v, dtype=np.float32) for k, v in shapes.items()}
    var_env = {side: {k: np.zeros(v, dtype=np.float32) for k, v in vs.items()} for side, vs in variables.items()}
    with np.errstate(all="ignore"):
        result = _Evaluator(expr, env, var_env, NUMPY, shape_only=True).eval(expr.tree.body)
    return tuple(np.shape(result))


class _Evaluator:
    def __init__(
        self,
        expr: Expression,
        env: dict[str, Any],
        variables: dict[str, dict[str, Any]],
        backend: Backend,
        shape_only: bool = False,
    ) -> None:
        self.expr = expr
        self.env = env
        self.variables = variables
        self.ops = backend.ops
        self.shape_only = shape_only

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return self.ops["const"](node.value)
        if isinstance(node, ast.Name):
            return self.env[node.id]
        if isinstance(node, ast.Attribute):
            side = "from" if node.value.id == _FROM else "to"  # type: ignore[attr-defined]
            found = self.variables.get(side, {})
            if node.attr not in found:
                known = ", ".join(f"{side}.{k}" for k in found) or "none"
                raise _refuse(self.expr, node, f"the {side}-layer has no variable {node.attr!r} (it has: {known})")
            return found[node.attr]
        if isinstance(node, ast.UnaryOp):
            value = self.eval(node.operand)
            return self.ops["neg"](value) if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            return self._apply(node, _BINOPS[type(node.op)], [node.left, node.right], [left, right])
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            args = [self.eval(a) for a in node.args]
            kwargs = {kw.arg: _const(kw.value) for kw in node.keywords}
            return self._apply(node, name, node.args, args, kwargs)
        if isinstance(node, ast.Subscript):
            value = self.eval(node.value)
            index = _const(node.slice)
            try:
                return value[index]
            except (IndexError, ValueError, TypeError) as exc:
                raise _refuse(
                    self.expr,
                    node,
                    f"the index does not fit shape {shape_text(np.shape(value))} ({first_line(exc, 160)})",
                ) from None
        raise _refuse(self.expr, node, "cannot evaluate")

    def _apply(
        self,
        node: ast.AST,
        op: str,
        arg_nodes: Sequence[ast.AST],
        args: list[Any],
        kwargs: dict[str | None, Any] | None = None,
    ) -> Any:
        try:
            return self.ops[op](*args, **{str(k): v for k, v in (kwargs or {}).items()})
        except Exception as exc:  # numpy raises ValueError, TensorFlow InvalidArgumentError
            if not self.shape_only and not _is_shape_error(exc):
                raise
            raise self._shape_error(node, op, arg_nodes, args, exc) from None

    def _shape_error(
        self, node: ast.AST, op: str, arg_nodes: Sequence[ast.AST], args: list[Any], exc: Exception
    ) -> ExpressionError:
        texts = [self.expr.segment(n) for n in arg_nodes]
        shapes = [tuple(np.shape(a)) for a in args]
        where = self.expr.segment(node)
        if len(args) == 2:
            what = f"{texts[0]} is {shape_text(shapes[0])} and {texts[1]} is {shape_text(shapes[1])}"
        else:
            what = f"{texts[0]} is {shape_text(shapes[0])}"
        kind = "matmul" if op == "matmul" else ("elementwise " + op if len(args) == 2 else op)
        hint = self._suggest(op, texts, shapes)
        return ExpressionError(
            f"{self.expr.option} {self.expr.text!r}: shapes do not fit in {where!r} ({kind}): {what}"
            + (f"; {hint}" if hint else "")
        )

    def _suggest(self, op: str, texts: list[str], shapes: list[tuple[Any, ...]]) -> str:
        if len(shapes) != 2:
            return ""
        (la, lb), (sa, sb) = texts, shapes
        ideas = []
        # The to-layer's variables first: mapping grad (shaped like act) through to.kernel is the
        # usual fix (the article's example 2).
        sides = sorted(self.variables.items(), key=lambda kv: kv[0] != "to")
        mats = {f"{side}.{name}": tuple(np.shape(v)) for side, vs in sides for name, v in vs.items()}
        for name, ms in mats.items():
            if len(ms) != 2:
                continue
            for i, (text, shape, other) in enumerate(((la, sa, sb), (lb, sb, sa))):
                if len(shape) >= 2 and shape[-1] == ms[0]:
                    mapped = shape[:-1] + (ms[1],)
                    if self._fits(op, mapped, other, first=(i == 0)):
                        ideas.append(f"matmul({text}, {name}) has shape {shape_text(mapped)}")
        for i, (text, shape, other) in enumerate(((la, sa, sb), (lb, sb, sa))):
            if len(shape) == 2 and self._fits(op, shape[::-1], other, first=(i == 0)):
                ideas.append(f"transpose({text}) has shape {shape_text(shape[::-1])}")
        return " or ".join(dict.fromkeys(ideas))[:300] if ideas else ""

    @staticmethod
    def _fits(op: str, a: tuple[Any, ...], b: tuple[Any, ...], first: bool) -> bool:
        x, y = (np.zeros(a), np.zeros(b)) if first else (np.zeros(b), np.zeros(a))
        try:
            if op == "matmul":
                np_matmul(x, y)
            else:
                np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            return False
        return True


def _is_shape_error(exc: Exception) -> bool:
    text = str(exc)
    return any(
        s in text
        for s in (
            "Incompatible shapes",
            "size-incompatible",
            "must be equal rank",
            "Dimensions must be equal",
            "broadcast",
            "In[0] and In[1]",
        )
    )
