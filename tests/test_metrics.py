"""homoecon_env.diagnostics.metrics (NumPy only): hand-worked cases and definitions written out."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from homoecon_env.diagnostics import metrics

# --------------------------------------------------------------------------- inequality


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0, 0, 0, 1], 0.75),  # sum|xi-xj| = 6, 2 n^2 mean = 8
        ([1, 1, 1, 1], 0.0),
        ([0, 0, 0], 0.0),
        ([1, 3], 0.25),  # sum|xi-xj| = 4, 2 * 4 * 2 = 16
        ([1, 2, 3], 2 / 9),  # sum|xi-xj| = 8, 2 * 9 * 2 = 36
        ([5.0], 0.0),
        ([], 0.0),
    ],
)
def test_gini_matches_population_mean_absolute_difference(values, expected):
    assert metrics.gini(values) == pytest.approx(expected, abs=1e-12)


def test_gini_equals_pairwise_definition_on_random_data():
    values = np.random.default_rng(0).exponential(size=37)
    pairwise = np.abs(values[:, None] - values[None, :]).sum() / (2 * len(values) ** 2 * values.mean())
    assert metrics.gini(values) == pytest.approx(pairwise, rel=1e-12)


def test_gini_is_scale_invariant_and_accepts_tensors():
    torch = pytest.importorskip("torch")
    values = np.array([0.5, 2.0, 7.0, 0.0])
    assert metrics.gini(torch.tensor(values * 3, requires_grad=True)) == pytest.approx(metrics.gini(values))


@pytest.mark.parametrize("bad", [[1.0, -0.1], [1.0, float("nan")], [[1.0, 2.0]]])
def test_gini_rejects_negative_nonfinite_or_2d(bad):
    with pytest.raises(ValueError, match="gini values"):
        metrics.gini(bad)


# --------------------------------------------------------------------------- specialization


def test_job_shares_counts_fractions_per_row():
    np.testing.assert_allclose(metrics.job_shares([0, 2, 2, 1], 3), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(metrics.job_shares([[0, 0], [1, 0]], 2), [[1.0, 0.0], [0.5, 0.5]])


def test_job_shares_rejects_out_of_range_job():
    with pytest.raises(ValueError, match=r"jobs: values must lie in \[0, 2\)"):
        metrics.job_shares([0, 2], 2)


def test_job_concentration_is_one_for_monoculture_zero_for_even_split():
    assert metrics.job_concentration([1.0, 0.0]) == pytest.approx(1.0)
    assert metrics.job_concentration([0.5, 0.5]) == pytest.approx(0.0)
    # shares (0.75, 0.25): entropy = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623 nats
    expected = 1 - (-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))) / math.log(2)
    assert metrics.job_concentration([0.75, 0.25]) == pytest.approx(expected)


def test_agent_specialization_per_agent_consistency():
    history = np.array([[0, 0, 1], [0, 1, 1], [0, 0, 1], [0, 1, 1]])  # [T=4, N=3]
    consistency = metrics.agent_specialization(history, 2)
    np.testing.assert_allclose(consistency, [1.0, 0.0, 1.0])
    assert metrics.specialization_index(history, 2) == pytest.approx(2 / 3)


def test_agent_specialization_mask_excludes_previous_occupant_of_a_row():
    history = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    mask = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])  # row 0 reborn at step 2
    np.testing.assert_allclose(metrics.agent_specialization(history, 2, mask), [1.0, 1.0])
    unmasked = metrics.agent_specialization(history, 2)
    assert unmasked[0] == pytest.approx(0.0)
    no_steps = metrics.agent_specialization(history, 2, np.zeros_like(history))
    assert np.all(np.isnan(no_steps))
    assert metrics.specialization_index(history, 2, np.zeros_like(history)) == 0.0


def test_division_of_labour_needs_both_consistency_and_diversity():
    fixed_split = np.array([[0, 1], [0, 1], [0, 1]])
    monoculture = np.zeros((3, 2), dtype=int)
    random_switching = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    assert metrics.division_of_labour(fixed_split, 2) == pytest.approx(1.0)
    assert metrics.division_of_labour(monoculture, 2) == pytest.approx(0.0)
    assert metrics.division_of_labour(random_switching, 2) == pytest.approx(0.0)
    assert metrics.division_of_labour(fixed_split, 2, mask=np.zeros((3, 2))) == 0.0


# --------------------------------------------------------------------------- communication


@pytest.mark.parametrize(
    "spectrum, expected",
    [([1, 0, 0], 1.0), ([1, 1, 1, 1], 4.0), ([3, 1], 16 / 10), ([0, 0], 0.0), ([2.0, -1e-15], 1.0)],
)
def test_participation_ratio_of_known_spectra(spectrum, expected):
    assert metrics.participation_ratio(spectrum) == pytest.approx(expected)


def test_participation_ratio_rejects_clearly_negative_eigenvalue():
    with pytest.raises(ValueError, match="eigenvalues"):
        metrics.participation_ratio([1.0, -0.5])


def test_covariance_spectrum_of_messages_on_a_line():
    # Messages t * (1, 1, 0): variance along (1,1,0)/sqrt2 only.
    t = np.array([-1.0, 0.0, 1.0])
    messages = t[:, None] * np.array([1.0, 1.0, 0.0])
    spectrum = metrics.covariance_spectrum(messages)
    np.testing.assert_allclose(spectrum, [2.0, 0.0, 0.0], atol=1e-12)  # var(t)=1 (ddof 1) * |(1,1,0)|^2
    assert metrics.participation_ratio(spectrum) == pytest.approx(1.0)


def test_isotropic_messages_have_full_effective_dimension():
    messages = np.vstack([np.eye(4), -np.eye(4)])
    spectrum = metrics.covariance_spectrum(messages)
    assert metrics.participation_ratio(spectrum) == pytest.approx(4.0)


def test_spectrum_and_pca_degenerate_inputs_do_not_crash():
    np.testing.assert_array_equal(metrics.covariance_spectrum(np.zeros((1, 3))), np.zeros(3))
    np.testing.assert_array_equal(metrics.covariance_spectrum(np.ones((5, 3))), np.zeros(3))
    coords, ratio = metrics.broadcast_pca(np.ones((5, 3)))
    assert coords.shape == (5, 2) and not coords.any() and not ratio.any()
    coords, ratio = metrics.broadcast_pca(np.zeros((1, 3)))
    assert coords.shape == (1, 2) and not ratio.any()
    coords, ratio = metrics.broadcast_pca(np.zeros((0, 3)))
    assert coords.shape == (0, 2)


def test_broadcast_pca_recovers_dominant_direction():
    t = np.linspace(-1, 1, 9)
    messages = np.stack([-2 * t, t, np.zeros_like(t)], axis=1)
    coords, ratio = metrics.broadcast_pca(messages, n_components=2)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    # Sign convention: the largest loading is positive, so the direction is (2, -1, 0) / sqrt5.
    np.testing.assert_allclose(coords[:, 0], -t * math.sqrt(5))
    np.testing.assert_allclose(coords[:, 1], 0.0, atol=1e-12)


def test_broadcast_pca_pads_components_beyond_rank():
    coords, ratio = metrics.broadcast_pca(np.array([[0.0, 1.0], [1.0, 0.0]]), n_components=3)
    assert coords.shape == (2, 3) and ratio[0] == pytest.approx(1.0) and ratio[1:].sum() == 0


# --------------------------------------------------------------------------- social filtering


def test_attention_entropy_of_uniform_and_one_hot_attention():
    uniform = np.full((3, 4), 0.25)
    one_hot = np.eye(3, 4)
    assert metrics.attention_entropy(uniform) == pytest.approx(math.log(4))
    assert metrics.attention_entropy(uniform, normalised=True) == pytest.approx(1.0)
    assert metrics.attention_entropy(one_hot) == pytest.approx(0.0)
    assert metrics.attention_entropy(one_hot, normalised=True) == pytest.approx(0.0)


def test_attention_entropy_uses_only_live_peers():
    attention = np.array([[0.5, 0.5, 0.0, 0.0], [0.2, 0.2, 0.2, 0.4]])
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]])  # agent 1 renormalised to 1/3 each
    assert metrics.attention_entropy(attention, mask) == pytest.approx(math.log(2) / 2 + math.log(3) / 2)
    assert metrics.attention_entropy(attention, mask, normalised=True) == pytest.approx(1.0)


def test_attention_entropy_skips_agents_without_choice():
    attention = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5]])
    mask = np.array([[1, 0], [0, 0], [1, 1]])
    assert metrics.attention_entropy(attention, mask) == pytest.approx(math.log(2) / 2)  # agents 0, 2
    assert metrics.attention_entropy(attention, mask, normalised=True) == pytest.approx(1.0)  # agent 2
    assert metrics.attention_entropy(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0


def test_attention_matrix_places_slots_at_peer_rows():
    attention = np.array([[0.6, 0.4], [1.0, 0.0], [0.3, 0.7]])
    peer_index = np.array([[2, 1], [0, -1], [1, 1]])
    expected = np.array([[0.0, 0.4, 0.6], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(metrics.attention_matrix(attention, peer_index), expected)


# --------------------------------------------------------------------------- markets


def test_relative_prices_sum_to_one_and_zero_row_is_uniform():
    np.testing.assert_allclose(metrics.relative_prices([2.0, 6.0]), [0.25, 0.75])
    np.testing.assert_allclose(metrics.relative_prices([[1.0, 1.0], [0.0, 0.0]]), [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="prices"):
        metrics.relative_prices([1.0, -1.0])


def test_trade_volume_counts_each_traded_unit_once():
    before = np.array([[2.0, 0.0], [0.0, 4.0]])
    after = np.array([[1.0, 1.5], [1.0, 2.5]])  # 1 unit of good 0 and 1.5 of good 1 change hands
    assert metrics.trade_volume(before, after) == pytest.approx(2.5)
    np.testing.assert_allclose(metrics.trade_volume(before, after, per_resource=True), [1.0, 1.5])
    assert metrics.trade_volume(before, before) == 0.0
    with pytest.raises(ValueError, match="after"):
        metrics.trade_volume(before, after[:1])


# --------------------------------------------------------------------------- definitions written out


def test_attention_entropy_matches_its_definition_row_by_row():
    rng = np.random.default_rng(4)
    attention = rng.dirichlet(np.full(6, 0.5), size=30)  # [N, K]
    mask = rng.random((30, 6)) > 0.3
    mask[0] = False  # no live peer: left out
    mask[1] = [True, False, False, False, False, False]  # one live peer: entropy 0, left out when normalised
    plain, normalised = [], []
    for weights, live in zip(attention, mask):
        p = weights[live] / weights[live].sum() if live.any() else np.array([])
        if p.size:
            entropy = -sum(q * math.log(q) for q in p if q > 0)
            plain.append(entropy)
            if p.size >= 2:
                normalised.append(entropy / math.log(p.size))
    assert metrics.attention_entropy(attention, mask) == pytest.approx(np.mean(plain), rel=1e-12)
    assert metrics.attention_entropy(attention, mask, normalised=True) == pytest.approx(np.mean(normalised), rel=1e-12)


def test_division_of_labour_is_mutual_information_of_agent_and_job():
    rng = np.random.default_rng(5)
    history = rng.integers(0, 3, size=(25, 8))  # [T, N]
    history[:, :3] = 1  # three steady workers
    joint = np.zeros((8, 3))  # agent-step counts: p(agent, job)
    for t in range(25):
        for agent in range(8):
            joint[agent, history[t, agent]] += 1
    joint /= joint.sum()
    independent = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    information = sum(joint[a, j] * math.log(joint[a, j] / independent[a, j])
                      for a in range(8) for j in range(3) if joint[a, j] > 0)
    assert metrics.division_of_labour(history, 3) == pytest.approx(information / math.log(3), rel=1e-12)


# --------------------------------------------------------------------------- module hygiene


def test_homoecon_env_and_metrics_load_no_plotting_scipy_or_networkx():
    """`import homoecon_env`, a step of the economy (which reads gini from metrics) and metrics itself
    must not load matplotlib, scipy or networkx: only the scripts' diagnostics do, when asked."""
    code = (
        "import sys\n"
        "heavy = ('matplotlib', 'scipy', 'networkx')\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "import homoecon_env\n"
        "print('import', loaded())\n"
        "env = homoecon_env.parallel_env()\n"
        "env.reset(seed=0)\n"
        "env.step({agent: env.action_space(agent).sample() for agent in env.agents})\n"
        "env.last_stats['gini']\n"
        "print('step', loaded())\n"
        "import homoecon_env.diagnostics.metrics\n"
        "print('metrics', loaded())\n"
    )
    root = Path(__file__).absolute().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=root, env=environment)
    assert result.stdout.split("\n")[:3] == ["import []", "step []", "metrics []"]
