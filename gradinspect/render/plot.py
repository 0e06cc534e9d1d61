"""``--plot FILE.png|FILE.svg``: the gradient-flow figure, drawn with matplotlib (``gradinspect[plot]``).

One horizontal band per layer with weights, in model order from the top: mean |g| (dark) and max
|g| (light) of its weight gradients on a log scale, the vanishing and exploding zones shaded,
flagged layers' names in colour. ``--hist`` adds small multiples: the histogram of log10 |g| of
each chosen layer's weight gradients. The figure is rendered to bytes here; writing it is the
caller's (with the other outputs, all or none).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from gradinspect.errors import UsageProblem
from gradinspect.render.chart import middle_ellipsis
from gradinspect.report import GradReport
from gradinspect.report.flow import EXPLODING, VANISHING, FlowRow, flow_rows

PLOT_FORMATS = ("png", "svg")
_HIST_MAX = 12  # panels; more layers would make each unreadable
_COLORS = {"mean": "#1f4e79", "max": "#9dc3e6", "vanishing": "#b8860b", "exploding": "#c00000"}


def plot_format(path: str) -> str:
    """``png`` or ``svg`` from the file name; UsageProblem otherwise (checked before any work)."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in PLOT_FORMATS:
        raise UsageProblem(f"--plot {path}: give a file ending in .png or .svg")
    return suffix


def require_matplotlib() -> None:
    """UsageProblem with the install command when matplotlib is missing (checked before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageProblem("--plot needs matplotlib: pip install 'gradinspect[plot]'") from exc


def figure_bytes(report: GradReport, fmt: str, hist: bool = False, title: str = "Gradient flow") -> bytes:
    """The figure of ``report`` as PNG or SVG bytes."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Layer names and paths come from files: text, never mathtext (``$\\foo$`` would be parsed, and may fail).
    style: Any = {"text.parse_math": False, "svg.fonttype": "none", "svg.hashsalt": "gradinspect"}
    with matplotlib.rc_context(style):
        fig = _figure(plt, report, hist, title)
        buf = io.BytesIO()
        # SVG text stays text (searchable, and the layer names can be read back); no timestamp.
        fig.savefig(buf, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return buf.getvalue()


def _figure(plt: Any, report: GradReport, hist: bool, title: str) -> Any:
    rows = flow_rows(report)
    panels = _hist_panels(report, rows) if hist else []
    height = max(3.0, 0.32 * len(rows) + 1.6)
    cols = 4
    hist_rows = math.ceil(len(panels) / cols)
    fig = plt.figure(figsize=(9.0, height + 2.2 * hist_rows), layout="constrained")
    grid = fig.add_gridspec(1 + hist_rows, cols, height_ratios=[height] + [2.2] * hist_rows)
    _flow_axes(fig.add_subplot(grid[0, :]), rows)
    for i, (name, values) in enumerate(panels):
        _hist_axes(fig.add_subplot(grid[1 + i // cols, i % cols]), name, values)
    batches = f"{report.batches} batches of {report.batch_size}" if report.batches else f"batch {report.batch_size}"
    fig.suptitle(f"{title}: {report.model.path}\nloss {report.loss_spec} = {report.loss_value:.4g}  ·  {batches}")
    return fig


def _flow_axes(ax: Any, rows: tuple[FlowRow, ...]) -> None:
    y = np.arange(len(rows))[::-1]
    mean = np.array([r.mean_abs if r.mean_abs else np.nan for r in rows], dtype=float)
    top = np.array([r.max_abs if r.max_abs else np.nan for r in rows], dtype=float)
    shown = np.concatenate([mean, top])
    shown = shown[np.isfinite(shown) & (shown > 0)]
    low, high = (float(shown.min()), float(shown.max())) if shown.size else (VANISHING, 1.0)
    xmin, xmax = 10 ** (math.floor(math.log10(low)) - 0.5), 10 ** (math.ceil(math.log10(high)) + 0.5)
    ax.set_xscale("log")
    ax.set_xlim(xmin, xmax)
    # Bars start at the left edge: on a log scale there is no zero to start from.
    ax.barh(y, np.nan_to_num(top - xmin), left=xmin, height=0.72, color=_COLORS["max"], label="max |g|")
    ax.barh(y, np.nan_to_num(mean - xmin), left=xmin, height=0.72, color=_COLORS["mean"], label="mean |g|")
    if VANISHING > xmin:
        ax.axvspan(xmin, VANISHING, color=_COLORS["vanishing"], alpha=0.15, lw=0, label=f"vanishing (< {VANISHING:g})")
    if EXPLODING < xmax:
        ax.axvspan(EXPLODING, xmax, color=_COLORS["exploding"], alpha=0.15, lw=0, label=f"exploding (> {EXPLODING:g})")
    ax.set_yticks(y, [middle_ellipsis(r.layer, 32) for r in rows])
    for label, row in zip(ax.get_yticklabels(), rows):
        if row.status in ("vanishing", "exploding", "non-finite", "no gradient"):
            label.set_color(_COLORS["vanishing" if row.status in ("vanishing", "no gradient") else "exploding"])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("|weight gradient| per layer (log scale)")
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small", framealpha=0.9)


def _hist_panels(report: GradReport, rows: tuple[FlowRow, ...]) -> list[tuple[str, np.ndarray]]:
    panels = []
    for row in rows[:_HIST_MAX]:
        parts = [a.ravel() for k, a in (report.arrays or {}).items() if k.startswith(f"weight/{row.layer}/")]
        values = np.abs(np.concatenate(parts)) if parts else np.zeros(0)
        values = values[np.isfinite(values) & (values > 0)]
        panels.append((row.layer, np.log10(values.astype(np.float64))))
    return panels


def _hist_axes(ax: Any, name: str, values: np.ndarray) -> None:
    if values.size:
        ax.hist(values, bins=30, color=_COLORS["mean"])
    ax.set_title(middle_ellipsis(name, 24), fontsize="small")
    ax.set_xlabel("log10 |g|", fontsize="x-small")
    ax.tick_params(labelsize="x-small")


def saliency_png(arrays: dict[str, Any], limit: int = 16) -> bytes:
    """``--saliency FILE.png``: per image input, a grid of its first ``limit`` samples, each image
    beside its saliency map (``input/<name>`` and ``saliency/<name>`` of :func:`saliency_maps`)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k.removeprefix("saliency/") for k in arrays if k.startswith("saliency/")]
    for name in names:
        if arrays[f"saliency/{name}"].ndim != 3:
            raise UsageProblem(
                f"--saliency: input {name!r} is not an image, so there is no grid to draw; use a .npz file"
            )
    rows = [(name, i) for name in names for i in range(min(limit, len(arrays[f"saliency/{name}"])))]
    with matplotlib.rc_context({"text.parse_math": False}):
        fig, axes = plt.subplots(len(rows), 2, figsize=(4.0, 2.0 * len(rows)), squeeze=False, layout="constrained")
        for (name, i), (left, right) in zip(rows, axes):
            image = np.asarray(arrays[f"input/{name}"][i], np.float64)
            image = image[..., 0] if image.ndim == 3 and image.shape[-1] not in (3, 4) else image
            if image.ndim == 3:  # RGB(A): scaled to [0, 1] for display
                image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
            left.imshow(image, cmap="gray")
            right.imshow(arrays[f"saliency/{name}"][i], cmap="jet", vmin=0.0, vmax=1.0)
            left.set_title(f"{name}[{i}]", fontsize=8)
            right.set_title("saliency", fontsize=8)
            for ax in (left, right):
                ax.set_axis_off()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
