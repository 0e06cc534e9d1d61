"""`gradinspect check`: health rules over every gradient of a model, and baselines of gradient norms."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradinspect.artifacts import limits
from gradinspect.errors import BaselineError, UsageProblem
from gradinspect.formatting import MISSING, first_line, number
from gradinspect.report import CheckReport, GradReport, RuleResult, Rules

if TYPE_CHECKING:
    from gradinspect.engine.options import InputShape

# 2: the input fingerprint covers the data only (version 1 hashed input names too).
BASELINE_VERSION = 2


def _weights(grad: GradReport) -> dict[str, Any]:
    return _by_key(w for pair in grad.pairs for w in pair.weights)


def _outputs(grad: GradReport) -> dict[str, Any]:
    return _by_key(o for pair in grad.pairs for o in pair.outputs)


def _by_key(entries: Iterable[Any]) -> dict[str, Any]:
    """Entries by their ``--save-npz`` key, the first of each (pairs share layers)."""
    found: dict[str, Any] = {}
    for entry in entries:
        found.setdefault(entry.key, entry)
    return found


def evaluate_rules(grad: GradReport, rules: Rules) -> list[RuleResult]:
    """Apply ``rules`` to every gradient in ``grad``; the baseline comparison is included."""
    _check_rules(rules)
    results: list[RuleResult] = []
    weights = _weights(grad)
    if not rules.allow_nonfinite:
        value_ok = math.isfinite(grad.loss_value)
        results.append(
            RuleResult(
                "nonfinite",
                "loss",
                value_ok,
                grad.loss_value,
                None,
                "the loss is finite" if value_ok else f"the loss is {grad.loss_value}",
            )
        )
        for key, entry in {**_outputs(grad), **weights}.items():
            if entry.stats is None:
                continue
            bad = entry.stats.nonfinite
            results.append(
                RuleResult(
                    "nonfinite",
                    key,
                    bad == 0,
                    float(bad),
                    0.0,
                    "no NaN/Inf" if bad == 0 else f"{bad} of {entry.stats.size} entries are NaN/Inf",
                )
            )
    for key, w in weights.items():
        s = w.stats
        if s is None:
            if not rules.allow_disconnected:
                results.append(RuleResult("disconnected", key, False, None, None, w.missing or "no gradient"))
            continue
        if not rules.allow_disconnected:
            results.append(RuleResult("disconnected", key, True, None, None, "receives a gradient"))
        limits = rules.limits(w.layer)
        for rule, limit, value, is_max, describe, short in (
            ("max-norm", limits["max_norm"], s.norm, True, "gradient norm", "norm"),
            ("min-norm", limits["min_norm"], s.norm, False, "gradient norm", "norm"),
            ("max-zero-fraction", limits["max_zero_fraction"], s.zero_fraction, True, _ZEROS, "zero share"),
            ("max-ratio", limits["max_ratio"], w.ratio, True, "gradient/weight norm ratio", "grad/weight ratio"),
        ):
            if limit is None:
                continue
            if value is None:
                # No ratio without a weight norm (an all-zero bias); a missing norm fails.
                ok = rule == "max-ratio"
            else:
                ok = value <= limit if is_max else value >= limit
            sign = ("<=" if ok else ">") if is_max else (">=" if ok else "<")
            message = f"{describe} {_fmt(rule, value)} {sign} {_fmt(rule, limit)}"
            why = f"{short} {'within the limit' if ok else 'too high' if is_max else 'too low'}"
            results.append(RuleResult(rule, key, ok, value, limit, message, why))
    if rules.baseline is not None:
        results.extend(compare_baseline(grad, read_baseline(rules.baseline), rules.rtol, str(rules.baseline)))
    return results


_ZEROS = "share of exactly-zero entries"


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1%}"


def _fmt(rule: str, value: float | None) -> str:
    return _pct(value) if rule == "max-zero-fraction" else number(value)


# --- baselines --------------------------------------------------------------------------


def baseline_dict(grad: GradReport) -> dict[str, Any]:
    """The gradient profile a later run is compared with: per-variable norms and the inputs' fingerprint."""
    return {
        "gradinspect_baseline": BASELINE_VERSION,
        "model": {"path": grad.model.path, "format": grad.model.format, "name": grad.model.name},
        "loss": grad.loss_spec,
        "inputs": {"source": grad.input_source, "batch_size": grad.batch_size, "fingerprint": grad.input_fingerprint},
        "norms": {key: (w.stats.norm if w.stats is not None else None) for key, w in sorted(_weights(grad).items())},
    }


def baseline_json(grad: GradReport) -> str:
    """The baseline file's text for ``grad``."""
    return json.dumps(baseline_dict(grad), indent=2) + "\n"


def read_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline file, read only if it is a regular file of bounded size."""
    p = Path(path)
    if not p.exists():
        raise BaselineError(f"--baseline {p}: no such file; write one with --write-baseline")
    try:
        data = json.loads(limits.read_regular(p, limits.MAX_TEXT_FILE, f"--baseline {p}"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BaselineError(f"--baseline {p}: not a readable baseline ({type(exc).__name__})") from None
    if (
        not isinstance(data, dict)
        or data.get("gradinspect_baseline") != BASELINE_VERSION
        or not isinstance(data.get("norms"), dict)
    ):
        if isinstance(data, dict) and isinstance(data.get("gradinspect_baseline"), int):
            raise BaselineError(
                f"--baseline {p}: written by an older gradinspect (baseline version {data['gradinspect_baseline']}, "
                f"this one reads {BASELINE_VERSION}); write it again with --write-baseline"
            )
        raise BaselineError(f"--baseline {p}: not a gradinspect baseline (version {BASELINE_VERSION} expected)")
    return data


def compare_baseline(grad: GradReport, base: dict[str, Any], rtol: float, label: str) -> list[RuleResult]:
    """One result per variable: did its gradient norm move by more than ``rtol`` (relative)?"""
    base_fp = (base.get("inputs") or {}).get("fingerprint")
    if base_fp and grad.input_fingerprint and base_fp != grad.input_fingerprint:
        raise BaselineError(
            f"--baseline {label}: it was written with other inputs ({(base.get('inputs') or {}).get('source')}); "
            "compare with the same --input (or --random/--seed) it was written with"
        )
    if base.get("loss") not in (None, grad.loss_spec):
        raise BaselineError(
            f"--baseline {label}: it was written with --loss {base['loss']}, this run uses {grad.loss_spec}"
        )
    now = {k: (w.stats.norm if w.stats is not None else None) for k, w in _weights(grad).items()}
    results = []
    for key in sorted(set(now) | set(base["norms"])):
        if key not in base["norms"]:
            results.append(RuleResult("baseline", key, False, now[key], None, "not in the baseline (a new variable)"))
            continue
        if key not in now:
            results.append(
                RuleResult("baseline", key, False, None, base["norms"][key], "in the baseline but not in the model")
            )
            continue
        old, new = base["norms"][key], now[key]
        results.append(RuleResult("baseline", key, *_baseline_verdict(old, new, rtol)))
    return results


def _baseline_verdict(old: float | None, new: float | None, rtol: float) -> tuple[bool, Any, Any, str, str]:
    """(passed, value, threshold, message, why) for one norm now against the baseline's."""
    if old is None or new is None:
        ok = old is None and new is None
        why = (
            "no gradient, as in the baseline"
            if ok
            else f"gradient norm {number(old)} in the baseline, {number(new)} now"
        )
        return ok, new, old, why, why
    moved = abs(new - old) / abs(old) if old else (0.0 if new == 0 else math.inf)
    change = relative_change(old, new)
    message = f"norm {number(old)} -> {number(new)}" + (f" ({change})" if change else "")
    return moved <= rtol, new, old, message, f"norm changed {change or 'from 0'} (rtol {rtol:g})"


def relative_change(old: float, new: float) -> str:
    """``+12.34%``, or beyond ±1000% the ratio (``×4.4e+10``), where a percentage stops being readable."""
    if not old:
        return ""
    change = (new - old) / old
    return f"{change:+.2%}" if abs(change) <= 10 else f"×{new / old:.2g}"


def _check_rules(rules: Rules) -> None:
    """Thresholds that cannot mean anything are usage errors, found before the model is loaded."""
    for option, value in (
        ("--max-norm", rules.max_norm),
        ("--min-norm", rules.min_norm),
        ("--max-ratio", rules.max_ratio),
        ("--rtol", rules.rtol),
    ):
        if value is not None and value < 0:
            raise UsageProblem(f"{option} {value}: must be 0 or more")
    if rules.max_zero_fraction is not None and not 0 <= rules.max_zero_fraction <= 1:
        raise UsageProblem(f"--max-zero-fraction {rules.max_zero_fraction}: must be between 0 and 1")


def check(
    model_or_path: Any,
    inputs: Any = None,
    *,
    layers: Sequence[str] | None = None,
    rules: Rules | None = None,
    write_baseline: str | Path | None = None,
    loss: str = "auto",
    target: Any = None,
    regularizers: bool = True,
    outputs: Sequence[str] = (),
    training: bool = False,
    random: int = 4,
    seed: int = 0,
    input_shape: InputShape = None,
    samples: str | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    compile: str = "auto",
    devices: int | None = None,
    custom_objects: str | Path | None = None,
    unsafe: bool = False,
    progress: Callable[..., None] | None = None,
) -> CheckReport:
    """Gradients of every trainable variable and layer output (or of ``layers``) in one forward and one
    backward pass, checked against ``rules`` (:class:`gradinspect.report.Rules`; default: no NaN/Inf,
    no disconnected variable). With ``write_baseline``, the norm profile is saved there. The other
    parameters are those of :func:`gradinspect.inspect_gradients`."""
    grad_options = dict(locals())  # the parameters, before any other local exists
    for name in ("model_or_path", "inputs", "layers", "rules", "write_baseline", "custom_objects", "unsafe"):
        del grad_options[name]
    grad_options["outputs"] = tuple(outputs)
    from gradinspect.artifacts.live import leaf_paths
    from gradinspect.artifacts.loading import as_loaded
    from gradinspect.engine.options import checked_options
    from gradinspect.engine.runner import run_gradients

    rules = rules or Rules()
    _check_rules(rules)
    if rules.baseline is not None:
        read_baseline(rules.baseline)  # fail before any work
    checked_options(inputs, {**grad_options, "custom_objects": custom_objects, "unsafe": unsafe})
    loaded = as_loaded(model_or_path, custom_objects, unsafe)
    if loaded.loader == "tf.saved_model":
        pairs = None if not layers else [(name, name) for name in layers]
        grad = run_gradients(loaded, inputs, pairs, all_layers=not layers, **grad_options)
    else:
        names = layers or leaf_paths(loaded.model)
        grad = run_gradients(loaded, inputs, [(n, n) for n in names], **grad_options)
    if write_baseline is not None:
        from gradinspect.destinations import atomic_write

        atomic_write(write_baseline, baseline_json(grad), option="--write-baseline")
    return CheckReport(grad, tuple(evaluate_rules(grad, rules)), rules)


def assert_healthy(model_or_path: Any, inputs: Any = None, **kwargs: Any) -> CheckReport:
    """:func:`check` (same parameters), for users' own pytest suites: raises AssertionError listing
    every failed rule."""
    report = check(model_or_path, inputs, **kwargs)
    if not report.passed:
        lines = [f"{r.rule} {r.target}: {r.message}" for r in report.failures]
        raise AssertionError(f"{report.summary()}:\n  " + "\n  ".join(lines))
    return report


_RULE_KEYS = {
    "max-norm": "max_norm",
    "min-norm": "min_norm",
    "max-zero-fraction": "max_zero_fraction",
    "max-ratio": "max_ratio",
}


_MAX_RULES_FILE = 1024**2  # a rules file is a few lines per layer


def read_rules(path: str | Path) -> tuple[dict[str, float], tuple[tuple[str, dict[str, float]], ...]]:
    """``--rules FILE.toml``: top-level thresholds (defaults the flags override) and ``[[layer]]``
    tables, each a ``match`` glob on layer names and thresholds. Keys as the flags: max-norm,
    min-norm, max-zero-fraction, max-ratio. UsageProblem for anything else, before any work."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    raw = limits.read_regular(path, _MAX_RULES_FILE, f"--rules {path}")  # never a FIFO or /dev/zero
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except RecursionError:
        raise UsageProblem(f"--rules {path}: nested too deeply to be a rules file") from None
    except (UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError is a ValueError, as is a 5,000-digit integer
        raise UsageProblem(f"--rules {path}: cannot read it as TOML ({first_line(exc, 200)})") from None
    layers = data.pop("layer", [])
    if not isinstance(layers, list):
        raise UsageProblem(f"--rules {path}: 'layer' must be an array of tables ([[layer]])")
    defaults = _thresholds(path, data, "the top level")
    per_layer = []
    for i, table in enumerate(layers, 1):
        if not isinstance(table, dict) or not isinstance(table.get("match"), str):
            raise UsageProblem(f'--rules {path}: [[layer]] number {i} needs match = "GLOB" (a layer-name pattern)')
        rest = {k: v for k, v in table.items() if k != "match"}
        per_layer.append((table["match"], _thresholds(path, rest, f"[[layer]] {table['match']!r}")))
    return defaults, tuple(per_layer)


def _thresholds(path: str | Path, table: dict[str, Any], where: str) -> dict[str, float]:
    out = {}
    for key, value in table.items():
        if key not in _RULE_KEYS:
            raise UsageProblem(
                f"--rules {path}: unknown key {key!r} in {where}; use {', '.join(_RULE_KEYS)} (and match in [[layer]])"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
            raise UsageProblem(f"--rules {path}: {key} in {where} must be a number >= 0, not {value!r}")
        if key == "max-zero-fraction" and value > 1:
            raise UsageProblem(f"--rules {path}: max-zero-fraction in {where} must be between 0 and 1")
        out[_RULE_KEYS[key]] = float(value)
    return out
