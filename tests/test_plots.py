"""Every figure of the homoecon_env.diagnostics.plots package draws data in each of its axes."""
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
from matplotlib.figure import Figure

from homoecon_env.diagnostics import graphs, metrics, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N, R, J, B, T = 12, 2, 2, 4, 30


def all_axes(figure):
    """Every axes of a figure (``Figure.axes`` includes its subfigures') plus inset axes."""
    found = []
    for ax in figure.axes:
        found.append(ax)
        found.extend(ax.child_axes)
    return found


def panels(figure):
    """Top-level panels: axes that are neither colour bars nor insets."""
    inset = {id(child) for ax in all_axes(figure) for child in ax.child_axes}
    return [ax for ax in all_axes(figure)
            if id(ax) not in inset and getattr(ax, "_colorbar", None) is None]


def has_content(ax):
    """True when the axes shows something: lines, collections, images, patches or text."""
    return ax.has_data() or bool(ax.texts) or bool(ax.images)


def assert_every_axis_has_content(figure, expected_panels):
    axes = all_axes(figure)
    assert axes, "figure has no axes"
    empty = [ax.get_title() or repr(ax) for ax in axes if not has_content(ax)]
    assert not empty, f"empty axes: {empty}"
    assert len(panels(figure)) == expected_panels


@pytest.fixture(scope="module")
def economy():
    """Small synthetic economy: holdings, prices, jobs, broadcasts, structured attention."""
    rng = np.random.default_rng(0)
    before = rng.gamma(2.0, 1.0, size=(N, R))
    after = 0.5 * before + 0.5 * before.mean(axis=0)  # conserves every good
    job_history = rng.integers(0, J, size=(T, N))
    peer_index = np.array([[j for j in range(N) if j != i] for i in range(N)])  # [N, K = N-1]
    favourite = np.array([1, 0, 3, 2, 1, 6, 7, 5, 9, 8, 8, 8])  # pairs, admirers, a triangle
    attention = np.full(peer_index.shape, 0.1)
    attention[peer_index == favourite[:, None]] = 5.0
    attention /= attention.sum(axis=1, keepdims=True)
    broadcasts = np.tanh(rng.normal(size=(N, B)))
    steps = np.arange(T) * 10
    spectra = np.sort(rng.gamma(1.0, 1.0, size=(T, B)), axis=1)[:, ::-1]
    return {
        "steps": steps,
        "gini": rng.uniform(0.2, 0.4, T),
        "totals": rng.uniform(10, 20, (T, R)),
        "prices": rng.uniform(0.5, 1.5, (T, R)),
        "job_shares": metrics.job_shares(job_history, J),
        "births": rng.poisson(2, T),
        "deaths_age": rng.poisson(1, T),
        "deaths_starvation": rng.poisson(1, T),
        "reward": rng.normal(0.1, 0.02, T),
        "participation_ratio": np.array([metrics.participation_ratio(s) for s in spectra]),
        "attention_entropy": rng.uniform(1.0, 2.0, T),
        "spectra": spectra,
        "ages": rng.integers(0, 10, N).astype(float),
        "broadcasts": broadcasts,
        "jobs": job_history[-1],
        "attention": attention,
        "peer_index": peer_index,
        "effort": rng.random(N),
        "consumption": rng.gamma(2.0, 0.5, (N, R)),
        "holdings_before": before,
        "holdings_after": after,
        "resource_names": ["berries", "meat"],
        "job_names": ["gathering", "hunting"],
        "max_age": 10,
    }


def test_trade_scatter_has_allocation_and_supply_demand_panels(economy):
    figure = plots.trade_scatter(economy["holdings_before"], economy["holdings_after"],
                                 economy["prices"][-1], economy["resource_names"])
    assert_every_axis_has_content(figure, 2)
    assert "before" in figure.axes[0].get_legend_handles_labels()[1][0]


def test_trade_scatter_with_one_good_and_mismatched_shapes():
    before = np.array([[1.0], [3.0]])
    assert_every_axis_has_content(plots.trade_scatter(before, before[::-1]), 2)
    with pytest.raises(ValueError, match="after"):
        plots.trade_scatter(before, np.ones((3, 1)))


def test_time_series_figures(economy):
    e = economy
    assert_every_axis_has_content(plots.gini_over_time(e["gini"], e["steps"]), 1)
    assert_every_axis_has_content(plots.resources_over_time(e["totals"], e["prices"], e["resource_names"]), 2)
    assert_every_axis_has_content(
        plots.ages_and_reproduction(e["ages"], e["births"], e["deaths_age"], e["deaths_starvation"], e["max_age"]), 2)
    assert_every_axis_has_content(plots.job_distribution(e["job_shares"], e["job_names"]), 1)
    assert_every_axis_has_content(plots.eigen_spectra(e["spectra"]), 1)
    assert_every_axis_has_content(plots.eigen_spectra(e["spectra"][-1]), 1)


def test_ages_figure_without_events_says_no_data(economy):
    figure = plots.ages_and_reproduction(economy["ages"], None, None, None)
    assert_every_axis_has_content(figure, 2)
    with pytest.raises(ValueError, match="expected equal lengths"):
        plots.ages_and_reproduction(economy["ages"], [1, 2], [1], None)


def test_births_stay_visible_when_every_death_is_replaced(economy):
    e = economy
    births = e["deaths_age"] + e["deaths_starvation"]  # each freed slot refilled in the same step
    for figure, ax_index in ((plots.ages_and_reproduction(e["ages"], births, e["deaths_age"], e["deaths_starvation"],
                                                          e["max_age"]), 1),
                             (plots.dashboard({key: e[key] for key in ("deaths_age", "deaths_starvation")}
                                              | {"births": births}), 0)):
        ax = figure.axes[ax_index]
        assert sorted(ax.get_legend_handles_labels()[1]) == ["births", "deaths (age)", "deaths (starvation)"]
        deaths = ax.collections  # one filled area per cause, stacked: its top is total deaths
        (line,) = [line for line in ax.get_lines() if line.get_label() == "births"]
        np.testing.assert_array_equal(np.unique(line.get_ydata()), np.unique(births))
        assert len(deaths) == 2 and all(line.get_zorder() > fill.get_zorder() for fill in deaths)
        line_colour = matplotlib.colors.to_rgb(line.get_color())
        assert all(line_colour != tuple(fill.get_facecolor()[0][:3]) for fill in deaths)


def test_single_step_series_still_show_data(economy):
    assert_every_axis_has_content(plots.gini_over_time([0.3]), 1)
    assert_every_axis_has_content(plots.job_distribution(economy["job_shares"][:1]), 1)
    assert_every_axis_has_content(plots.eigen_spectra(economy["spectra"][:1]), 1)


def test_snapshot_figures(economy):
    e = economy
    coords, explained = metrics.broadcast_pca(e["broadcasts"])
    figure = plots.broadcast_pca(coords, e["jobs"], e["ages"], explained, e["job_names"])
    assert_every_axis_has_content(figure, 2)
    assert len(all_axes(figure)) == 3  # the age panel has a colour bar
    heatmap = plots.attention_heatmap(e["attention"], e["peer_index"], N)
    assert_every_axis_has_content(heatmap, 1)
    image = heatmap.axes[0].images[0].get_array()
    expected = np.zeros((N, N))  # row i, column j: the weight agent i puts on agent j
    for i in range(N):
        for slot, j in enumerate(e["peer_index"][i]):
            expected[i, j] += e["attention"][i, slot]
    np.testing.assert_allclose(image, expected)
    assert_every_axis_has_content(plots.effort_vs_consumption(e["effort"], e["consumption"], e["jobs"]), 1)
    assert_every_axis_has_content(plots.effort_vs_consumption(e["effort"], e["consumption"].sum(axis=1)), 1)


def test_graph_figures(economy):
    summary = graphs.graph_summary(graphs.favourite_graph(economy["attention"], economy["peer_index"]))
    figure = plots.topology_histogram(summary["component_hashes"], summary["component_sizes"],
                                      summary["component_examples"])
    assert_every_axis_has_content(figure, 1)
    assert len(figure.axes[0].child_axes) == len(summary["component_hashes"])  # one drawing per shape
    assert_every_axis_has_content(plots.topology_histogram({}), 1)
    assert_every_axis_has_content(plots.degree_pagerank(summary["in_degree"], summary["pagerank"]), 2)


def test_full_dashboard_has_one_filled_panel_per_series(economy):
    figure = plots.dashboard(economy, title="test run")
    # gini, reward, totals, prices, jobs, births/deaths, ages, effort, net trade, PCA, spectra,
    # participation ratio, attention entropy, heatmap, topology, PageRank
    assert_every_axis_has_content(figure, 16)
    assert figure.get_size_inches().tolist() == [16.0, 10.0]
    rgb = plots.figure_to_rgb(figure)
    assert rgb.shape == (1000, 1600, 3) and rgb.dtype == np.uint8
    assert rgb.std() > 10  # not a blank canvas


@pytest.mark.parametrize(
    "keys, expected",
    [
        (["gini"], 1),
        (["gini", "ages", "broadcasts"], 4),  # broadcasts give PCA and a spectrum
        (["births", "deaths_age", "effort", "consumption", "attention", "peer_index", "job_names"], 5),
        (["resource_names", "job_names", "max_age"], 1),  # labels only: a "no data yet" panel
        ([], 1),
    ],
)
def test_dashboard_lays_out_only_available_panels(economy, keys, expected):
    figure = plots.dashboard({key: economy[key] for key in keys})
    assert_every_axis_has_content(figure, expected)


def test_dashboard_without_data_says_so():
    figure = plots.dashboard({"gini": np.array([])})
    assert [text.get_text() for text in figure.axes[0].texts] == ["no data yet"]


def test_dashboard_accepts_torch_tensors(economy):
    torch = pytest.importorskip("torch")
    history = {"gini": torch.tensor(economy["gini"]), "broadcasts": torch.tensor(economy["broadcasts"])}
    assert_every_axis_has_content(plots.dashboard(history), 3)


def test_dashboard_rejects_unknown_keys_and_bad_shapes(economy):
    with pytest.raises(ValueError, match="unknown keys \\['gin'\\]"):
        plots.dashboard({"gin": economy["gini"]})
    with pytest.raises(ValueError, match="history\\['totals'\\]: expected 2-D"):
        plots.dashboard({"totals": economy["gini"]})
    with pytest.raises(ValueError, match="history\\['gini'\\]: has 29 entries but steps has 30"):
        plots.dashboard({"gini": economy["gini"][1:], "steps": economy["steps"]})


def test_dashboard_keys_are_documented():
    assert {"gini", "totals", "prices", "job_shares", "births", "deaths_age", "deaths_starvation", "ages",
            "broadcasts", "jobs", "attention", "peer_index", "effort", "consumption", "resource_names",
            "job_names", "max_age", "participation_ratio", "attention_entropy"} <= set(plots.DASHBOARD_KEYS)


def test_save_figure_writes_png_atomically(tmp_path, economy):
    path = tmp_path / "nested" / "gini.png"
    written = plots.save_figure(plots.gini_over_time(economy["gini"]), path)
    assert written == str(path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    plots.save_figure(plots.gini_over_time(economy["gini"][:5]), path)  # replaces in place
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(os.listdir(path.parent)) == ["gini.png"]  # no temporary file left behind


def test_save_figure_failure_keeps_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    figure = Figure()

    def broken_savefig(stream, **kwargs):
        stream.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_figure(figure, path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["figure.png"]


def test_save_figure_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unsupported image format 'xyz'"):
        plots.save_figure(Figure(), tmp_path / "figure.xyz")


def test_plots_never_touch_pyplot():
    code = (
        "import sys, numpy as np\n"
        "from homoecon_env.diagnostics import plots\n"
        "plots.figure_to_rgb(plots.dashboard({'gini': np.ones(3), 'broadcasts': np.eye(3)}))\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    root = Path(__file__).absolute().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=root, env=environment)
    assert result.stdout.strip().splitlines()[-1] == "False"
