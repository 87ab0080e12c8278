"""Observations against hand-built expectations: the documented layout, the one-step message delay,
and which peer slots are live (docs/design.md section 3)."""
import math

import numpy as np
import pytest
import torch

import homoecon_env
from homoecon_env import EconomyConfig, Job
from homoecon_env.core import Actions, Economy, observe, production
from homoecon_env.core.state import initial_state

F64 = torch.float64


def test_self_features_follow_the_documented_row_layout():
    """Num ranges of the env docstring's table, checked on a hand-built state (R=2, B=3, D=2, J=2)."""
    config = EconomyConfig(num_agents=2, broadcast_dim=3, id_dim=2, max_age=8,
                           jobs=(Job("a", output=(1.0, 0.0), phase=0.5, period=10.0), Job("b", output=(0.0, 1.0))))
    state = initial_state(config, torch.Generator().manual_seed(0)).replace(
        holdings=np.array([[1.5, 2.5], [0.0, 4.0]]), ages=np.array([2, 6]), effort=np.array([0.25, 1.0]),
        utility_weights=np.array([[0.3, 0.7], [0.5, 0.5]]), broadcast=np.array([[0.1, -0.2, 0.3], [1.0, 0.0, -1.0]]),
        id_vectors=np.array([[0.9, -0.9], [0.1, 0.2]]), step=5)
    features = observe.self_features(state, production.JobTable.from_config(config), config)
    angle = [math.pi / 2 * 5 / 10 + 0.5, math.pi / 2 * 5 / 100]  # pi/2 * t / period + phase
    expected_first = [1.5, 2.5, 2 / 8, 0.25, 0.3, 0.7, 0.1, -0.2, 0.3, 0.9, -0.9,
                      math.sin(angle[0]), math.sin(angle[1]), math.cos(angle[0]), math.cos(angle[1])]
    assert features.shape == (2, 2 * 2 + 2 + 3 + 2 + 2 * 2) and features.dtype == np.float32
    np.testing.assert_allclose(features[0], expected_first, rtol=1e-6)
    np.testing.assert_allclose(features[1, :4], [0.0, 4.0, 6 / 8, 1.0], rtol=1e-6)
    public = observe.public_features(state)  # peer row: broadcast | id | holdings
    np.testing.assert_allclose(public[1], [1.0, 0.0, -1.0, 0.1, 0.2, 0.0, 4.0], rtol=1e-6)


def step_with_broadcast(economy: Economy, broadcast: np.ndarray):
    n = economy.state.num_slots
    return economy.step(Actions(broadcast=torch.from_numpy(broadcast), job=torch.zeros(n, dtype=torch.long),
                                effort=torch.full((n,), 0.5, dtype=F64), trade_weights=torch.ones(n, 2, dtype=F64),
                                consume=torch.full((n, 2), 0.5, dtype=F64)))


@pytest.mark.parametrize("num_peers", [None, 2])
def test_peers_see_each_message_in_the_observation_after_it_was_sent(num_peers):
    """The one-step delay: the observation returned by step t shows the broadcasts of step t, not
    those of step t - 1 and not the reset's zeros."""
    economy = Economy(EconomyConfig(num_agents=5, broadcast_dim=2, max_age=1000, num_peers=num_peers))
    first = economy.reset(0)
    assert (first.peers[..., :2] == 0).all() and (first.self_features[:, 6:8] == 0).all()
    for t in range(1, 4):
        messages = np.array([[row / 10 + t / 100, -row / 10] for row in range(5)])  # distinct per row and step
        out = step_with_broadcast(economy, messages)
        assert not out.births.born.any(), "no deaths in this run: each row keeps its agent"
        shown = out.observation.peer_index.numpy()
        for row in range(5):
            np.testing.assert_allclose(out.observation.self_features[row, 6:8], messages[row], rtol=1e-6)
            for slot, peer in enumerate(shown[row]):
                assert peer != row
                np.testing.assert_allclose(out.observation.peers[row, slot, :2], messages[peer], rtol=1e-6)


def test_everyone_else_lists_the_other_rows_and_pads_beyond_them():
    assert observe.everyone_else(4, 3).tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert observe.everyone_else(4, 2).tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]
    assert observe.everyone_else(4, 5).dtype == observe.everyone_else(4, 3).dtype == torch.int64
    assert observe.everyone_else(4, 5).tolist() == [[1, 2, 3, -1, -1], [0, 2, 3, -1, -1], [0, 1, 3, -1, -1],
                                                    [0, 1, 2, -1, -1]]
    assert observe.everyone_else(2, 1).tolist() == [[1], [0]]


def test_peer_mask_marks_exactly_the_padding_when_peers_outnumber_the_others():
    economy = Economy(EconomyConfig(num_agents=4, num_peers=5))
    observation = economy.reset(0)
    assert observation.peer_mask.tolist() == [[1, 1, 1, 0, 0]] * 4
    assert (observation.peers[:, 3:] == 0).all()
    public = observe.public_features(economy.state_arrays)
    for row, others in enumerate([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]):
        np.testing.assert_array_equal(observation.peers[row, :3].numpy(), public[others])


@pytest.mark.parametrize("all_valid", [True, False])
def test_observation_arrays_have_the_space_dtypes(all_valid):
    config = EconomyConfig(num_agents=4)
    state = initial_state(config, torch.Generator().manual_seed(1))
    peer_index = observe.everyone_else(4, 3).numpy()
    observation = observe.observe(state, peer_index, production.JobTable.from_config(config), config, all_valid)
    assert observation.self_features.dtype == observation.peers.dtype == observation.peer_mask.dtype == torch.float32
    assert observation.peer_index.dtype == torch.int64 and observe.public_features(state).dtype == np.float32


def test_padding_is_masked_by_default_even_when_everyone_lives():
    """A caller that does not vouch for the assignment (e.g. restoring a checkpoint's padded one) gets
    the -1 slots masked and zeroed."""
    config = EconomyConfig(num_agents=3, num_peers=4)
    state = initial_state(config, torch.Generator().manual_seed(1))
    observation = observe.observe(state, observe.everyone_else(3, 4).numpy(), production.JobTable.from_config(config),
                                  config)
    assert observation.peer_mask.tolist() == [[1, 1, 0, 0]] * 3 and (observation.peers[:, 2:] == 0).all()


def test_peer_mask_follows_the_living_rows_of_a_hand_built_assignment():
    config = EconomyConfig(num_agents=4)
    state = initial_state(config, torch.Generator().manual_seed(1)).replace(alive=np.array([True, True, False, True]))
    peer_index = np.array([[1, 0, -1], [2, 3, 0], [0, 1, 2], [3, 2, 1]])
    observation = observe.observe(state, peer_index, production.JobTable.from_config(config), config)
    expected_mask = [[1, 1, 0], [0, 1, 1], [1, 1, 0], [1, 0, 1]]  # row 2 is dead, -1 is empty
    assert observation.peer_mask.tolist() == expected_mask
    assert observation.peer_index.tolist() == [[1, 0, -1], [-1, 3, 0], [0, 1, -1], [3, -1, 1]]
    public = observe.public_features(state)
    for row in range(4):
        for slot in range(3):
            wanted = public[peer_index[row, slot]] if expected_mask[row][slot] else np.zeros(public.shape[1])
            np.testing.assert_array_equal(observation.peers[row, slot].numpy(), wanted)


def test_on_the_final_step_no_dead_row_is_shown_as_a_peer():
    n = 30
    economy = Economy(EconomyConfig(num_agents=n, num_peers=6, max_steps=1, max_age=1000))
    economy.reset(2)
    consume = torch.full((n, 2), 0.5, dtype=F64)
    consume[:10] = 0.0  # rows 0..9 eat nothing and starve; nobody is born on the final step
    out = economy.step(Actions(broadcast=torch.zeros(n, 6, dtype=F64), job=torch.zeros(n, dtype=torch.long),
                               effort=torch.ones(n, dtype=F64), trade_weights=torch.ones(n, 2, dtype=F64),
                               consume=consume))
    dead = set(np.flatnonzero(out.death_cause.numpy()).tolist())
    assert set(range(10)) <= dead and len(dead) < n
    shown, mask = out.observation.peer_index.numpy(), out.observation.peer_mask.numpy()
    assert mask.sum() > 0 and (mask == 0).sum() > 0
    for row in range(n):
        for slot in range(6):
            assert (mask[row, slot] == 1) == (shown[row, slot] >= 0)
            if shown[row, slot] >= 0:
                assert shown[row, slot] not in dead and shown[row, slot] != row


def test_sampled_peer_mask_is_the_aliveness_of_each_sampled_row():
    config = EconomyConfig(num_agents=30, num_peers=6)
    state = initial_state(config, torch.Generator().manual_seed(3)).replace(alive=np.arange(30) >= 10)
    peer_index = observe.sample_peers(30, 6, torch.Generator().manual_seed(4)).numpy()
    assert (peer_index < 10).any() and (peer_index == 0).any(), "the sample includes dead rows and row 0"
    observation = observe.observe(state, peer_index, production.JobTable.from_config(config), config, all_valid=True)
    expected = [[1.0 if peer >= 10 else 0.0 for peer in row] for row in peer_index.tolist()]
    assert observation.peer_mask.tolist() == expected


def test_env_docstring_example_runs():
    import doctest
    import importlib
    module = importlib.import_module("homoecon_env.env")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


def test_dict_observation_of_a_peer_shows_its_last_broadcast():
    env = homoecon_env.parallel_env(num_agents=4, broadcast_dim=2, max_age=1000, max_steps=5)
    env.reset(seed=0)
    actions = {name: {"broadcast": np.array([0.1 * k, -0.1 * k], np.float32), "job": 0,
                      "effort": np.ones(1, np.float32), "trade_weights": np.ones(2, np.float32),
                      "consume": np.full(2, 0.5, np.float32)} for k, name in enumerate(env.agents)}
    obs, *_ = env.step(actions)
    # agent_0's peers are agent_1, agent_2, agent_3 in slot order
    np.testing.assert_allclose(obs["agent_0"]["peers"][:, :2], [[0.1, -0.1], [0.2, -0.2], [0.3, -0.3]], rtol=1e-6)


@pytest.mark.parametrize("n, k", [(6, 4), (40, 3)])  # a permutation per row; offsets with redraws
def test_sampled_peers_are_uniform_over_the_other_rows(n, k):
    """Each other row is drawn with probability k / (n - 1): a chi-square test over the [N, N - 1] pair
    counts (false-failure rate 1e-6); a row never drawn, or drawn too often, fails it."""
    from scipy.stats import chisquare
    g, draws = torch.Generator().manual_seed(11), 600
    counts = torch.zeros(n, n, dtype=torch.long)
    for _ in range(draws):
        counts.scatter_add_(1, observe.sample_peers(n, k, g), torch.ones(n, k, dtype=torch.long))
    assert counts.diagonal().sum() == 0
    off_diagonal = counts[~torch.eye(n, dtype=torch.bool)].numpy()
    assert chisquare(off_diagonal).pvalue > 1e-6, off_diagonal.reshape(n, n - 1)
