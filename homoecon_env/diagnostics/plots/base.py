"""Shared pieces of every figure: a pyplot-free figure, panel styling, input checks, and output.

Figures are built without pyplot (no global figure state, no GUI backend). :func:`save_figure`
writes one atomically and :func:`figure_to_rgb` renders one to pixels (TensorBoard, GIFs).
"""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from homoecon_env.diagnostics.arrays import float_array as as_array  # plots accept non-finite values
from homoecon_env.files import atomic_write_bytes

DPI = 100
TITLE_SIZE = 10
LABEL_SIZE = 9
TICK_SIZE = 8


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout, sized in inches at :data:`DPI`."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def style_axes(ax: Axes, title: str, xlabel: str = "", ylabel: str = "") -> None:
    """Title, axis labels and tick sizes shared by every panel."""
    ax.set_title(title, fontsize=TITLE_SIZE)
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TICK_SIZE)


def add_legend(ax: Axes, **kwargs: Any) -> None:
    """A small legend, only if something is labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=TICK_SIZE, framealpha=0.8, **kwargs)


def x_values(length: int, steps: Any, name: str) -> np.ndarray:
    """x values for a series of ``length``: ``steps`` if given (checked), else 0..length-1."""
    if steps is None:
        return np.arange(length)
    x = as_array(steps, "steps", 1)
    if len(x) != length:
        raise ValueError(f"{name}: has {length} entries but steps has {len(x)}; expected equal lengths")
    return x


def names_or_default(names: Sequence[str] | None, count: int, prefix: str) -> list[str]:
    """``names`` checked against ``count``, or ``prefix 0`` .. ``prefix count-1``."""
    if names is None:
        return [f"{prefix} {k}" for k in range(count)]
    names = [str(n) for n in names]
    if len(names) < count:
        raise ValueError(f"{prefix} names: got {len(names)} names for {count} {prefix}s")
    return names[:count]


def category_colour(index: int) -> Any:
    """Categorical colour ``index`` (jobs, goods), stable across figures."""
    return colormaps["tab10"](index % 10)


def point_style(count: int) -> dict[str, float]:
    """Marker size and opacity for a scatter of ``count`` agents: smaller and lighter when crowded."""
    return {"s": 16.0, "alpha": 0.9} if count <= 500 else {"s": 3.0, "alpha": 0.4}


def no_data(ax: Axes, title: str, message: str = "no data yet") -> None:
    """Mark a panel whose data is not available instead of leaving it blank."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=TITLE_SIZE + 2, color="grey",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    style_axes(ax, title)


# --------------------------------------------------------------------------- output


def figure_to_rgb(figure: Figure) -> np.ndarray:
    """Render a figure with the Agg canvas and return its pixels [H, W, 3] uint8."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure: Figure, path: str | os.PathLike[str], dpi: float | None = None) -> str:
    """Write ``figure`` to ``path`` atomically; the format comes from the extension (png default).

    The image is rendered to bytes in memory, then written with
    :func:`homoecon_env.files.atomic_write_bytes` (temporary file, fsync, rename): readers never see a
    half-written file, a failure leaves any old file intact, and the file gets the usual permissions.
    Parent directories are created. Returns the path written.
    """
    target = os.fspath(path)
    extension = os.path.splitext(target)[1].lstrip(".").lower() or "png"
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if extension not in supported:
        raise ValueError(f"path: unsupported image format {extension!r} in {target!r}; "
                         f"expected one of {sorted(supported)}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=extension, dpi=dpi or figure.dpi)
    return atomic_write_bytes(target, buffer.getvalue())
