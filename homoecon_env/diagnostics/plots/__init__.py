"""Figures for evaluate.py, TensorBoard images and the training dashboard (docs/design.md section 6).

Every plotting function takes arrays (NumPy or CPU torch) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so no global figure state is created and
no GUI backend is needed; callers save it with :func:`save_figure` (atomic) or turn it into an
image with :func:`figure_to_rgb`. Importing this package loads matplotlib; importing
``homoecon_env`` or ``diagnostics.metrics`` does not.

Modules: :mod:`.base` (figure, styling, checks, output), :mod:`.panels` (what one axes draws),
:mod:`.figures` (the public figures) and :mod:`.dashboard` (all panels in one figure).
"""
from homoecon_env.diagnostics.plots.base import figure_to_rgb, save_figure
from homoecon_env.diagnostics.plots.dashboard import DASHBOARD_KEYS, dashboard, dashboard_image
from homoecon_env.diagnostics.plots.figures import (
                                                    ages_and_reproduction,
                                                    attention_heatmap,
                                                    broadcast_pca,
                                                    degree_pagerank,
                                                    effort_vs_consumption,
                                                    eigen_spectra,
                                                    gini_over_time,
                                                    job_distribution,
                                                    resources_over_time,
                                                    topology_histogram,
                                                    trade_scatter,
)

__all__ = [
    "DASHBOARD_KEYS",
    "trade_scatter",
    "gini_over_time",
    "resources_over_time",
    "ages_and_reproduction",
    "job_distribution",
    "broadcast_pca",
    "attention_heatmap",
    "eigen_spectra",
    "topology_histogram",
    "degree_pagerank",
    "effort_vs_consumption",
    "dashboard",
    "dashboard_image",
    "figure_to_rgb",
    "save_figure",
]
