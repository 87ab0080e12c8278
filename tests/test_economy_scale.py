"""The large-population paths of the lifecycle and the own features (issue 19), against the dense
formulas they replace, bit for bit (signed zeros included), and against hand-worked cases."""
import numpy as np
import pytest
import torch

from homoecon_env import EconomyConfig
from homoecon_env.core import Economy, lifecycle, observe, signals, space
from homoecon_env.core.production import JobTable, season_features
from homoecon_env.core.state import initial_state


def dense_bequeath(holdings, dead, agent_ids, parent_ids, parent_slots):
    """Bequests as first written: every row adds a (possibly zero) share from each parent, dense [N, R]."""
    rows = np.maximum(parent_slots, 0)
    is_heir = (agent_ids[rows] == parent_ids) & dead[rows] & ~dead[:, None]
    heirs = np.zeros(holdings.shape[0])
    for child, parent in zip(*np.nonzero(is_heir)):
        heirs[rows[child, parent]] += 1.0
    share = holdings / np.maximum(heirs, 1.0)[:, None]
    kept = holdings * ~dead[:, None]
    for parent in range(2):
        received = np.zeros_like(holdings)
        received[is_heir[:, parent]] = share[rows[is_heir[:, parent], parent]]
        kept = kept + received
    lost = holdings.T @ (dead & (heirs == 0))
    return kept, lost


def bits(array):
    return np.ascontiguousarray(array).view(np.uint64)


def random_family(rng, n, r):
    """Holdings with zeros of both signs, a random death mask, parents that may have moved on (ids that
    no longer match), founders (-1) and children of the same parent twice."""
    holdings = rng.random((n, r)) * rng.integers(0, 2, (n, r))
    holdings[rng.random((n, r)) < 0.15] = -0.0
    dead = rng.random(n) < 0.4
    agent_ids = rng.permutation(10 * n)[:n]
    parent_slots = rng.integers(-1, n, (n, 2))
    moved_on = rng.random((n, 2)) < 0.3
    parent_ids = np.where(parent_slots >= 0, np.where(moved_on, -7, agent_ids[np.maximum(parent_slots, 0)]), -1)
    return holdings, dead, agent_ids, parent_ids, parent_slots


def test_bequests_equal_the_dense_sum_bit_for_bit_signed_zeros_included():
    rng = np.random.default_rng(0)
    for trial in range(300):
        args = random_family(rng, int(rng.integers(1, 40)), int(rng.integers(1, 4)))
        kept, lost = lifecycle.bequeath(*args)
        expected_kept, expected_lost = dense_bequeath(*args)
        assert np.array_equal(bits(kept), bits(expected_kept)), trial
        assert np.array_equal(bits(lost), bits(expected_lost)), trial


def test_bequests_of_a_hand_worked_family_conserve_goods():
    """Row 0 dies with two living children (rows 1, 2; row 2 also the child of row 3, dead too); row 4
    dies childless. Row 1 gets half of row 0's; row 2 half of row 0's and all of row 3's."""
    holdings = np.array([[4.0, 2.0], [1.0, 1.0], [0.0, 3.0], [6.0, 0.5], [9.0, 9.0]])
    dead = np.array([True, False, False, True, True])
    agent_ids = np.array([10, 11, 12, 13, 14])
    parent_slots = np.array([[-1, -1], [0, -1], [0, 3], [-1, -1], [-1, -1]])
    parent_ids = np.array([[-1, -1], [10, -1], [10, 13], [-1, -1], [-1, -1]])
    kept, lost = lifecycle.bequeath(holdings, dead, agent_ids, parent_ids, parent_slots)
    assert kept.tolist() == [[0, 0], [3.0, 2.0], [8.0, 4.5], [0, 0], [0, 0]]
    assert lost.tolist() == [9.0, 9.0]
    assert np.allclose(kept.sum(axis=0) + lost, holdings.sum(axis=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, width", [(np.float64, 2), (np.float64, 4), (np.int64, 2), (np.int64, 0), (bool, 3)])
def test_rows_set_as_records_equal_fancy_assignment(dtype, width):
    rng = np.random.default_rng(1)
    shape = (50, width) if width else (50,)
    values = (rng.random(shape) * 100).astype(dtype)
    rows = np.flatnonzero(rng.random(50) < 0.3)
    fills = [0, rng.random((rows.size,) + shape[1:]) * 100]
    for fill in fills:
        expected = values.copy()
        expected[rows] = fill
        result = lifecycle._with_rows(values, rows, fill)
        assert result.dtype == expected.dtype and np.array_equal(result, expected)
        assert result is not values
    strided = np.asfortranarray(values)  # not C-contiguous: the plain path
    assert np.array_equal(lifecycle._with_rows(strided, rows, fills[1]), expected)


def reproduce_reference(state, dead, generator, config):
    """Endowments, parents' holdings and generations of reproduce as first written (dense [N] and
    [N, R] arithmetic), from the same random draws."""
    draws = torch.rand(int(dead.sum()), 3 + config.id_dim, generator=generator, dtype=torch.float64).numpy()
    survivors = state.alive & ~dead
    parent_slots = lifecycle.draw_parents(state.lifetime_reward, survivors, draws[:, :2])
    children = np.bincount(parent_slots.ravel(), minlength=state.num_slots)
    given = 1.0 - (1.0 - config.parent_share) ** children
    gift = state.holdings * (given / np.maximum(children, 1))[:, None]
    endowment = gift.take(parent_slots, axis=0).sum(axis=1)
    holdings = state.holdings * (1.0 - given)[:, None]
    generation = state.generation.take(parent_slots).max(axis=1) + 1
    return parent_slots, endowment, holdings, generation


def test_births_equal_the_dense_formulas_bit_for_bit():
    config = EconomyConfig(num_agents=3000, num_peers=8, parent_share=0.3)
    generator = torch.Generator().manual_seed(5)
    state = initial_state(config, generator)
    rng = np.random.default_rng(2)
    state = state.replace(lifetime_reward=rng.random(config.num_agents) ** 8,  # a few agents with many children
                          generation=rng.integers(0, 5, config.num_agents))
    dead = rng.random(config.num_agents) < 0.3
    before = generator.get_state()
    new_state, births = lifecycle.reproduce(state, dead, True, generator, config)
    generator.set_state(before)
    parent_slots, endowment, holdings, generation = reproduce_reference(state, dead, generator, config)
    slots = np.flatnonzero(dead)
    assert np.bincount(parent_slots.ravel()).max() >= 3  # parents with several children this step
    assert np.array_equal(births.parent_slots[slots], parent_slots)
    assert np.array_equal(bits(new_state.holdings[slots]), bits(endowment))
    alive = np.flatnonzero(~dead)
    assert np.array_equal(bits(new_state.holdings[alive]), bits(holdings[alive]))
    assert np.array_equal(new_state.generation[slots], generation)
    assert np.array_equal(new_state.generation[alive], state.generation[alive])


@pytest.mark.parametrize("overrides", [{}, {"private_signals": True}, {"world_width": 3, "world_height": 2}])
def test_own_features_in_blocks_equal_the_whole_columns_cast_to_float32(overrides):
    n = observe.FEATURE_BLOCK * 2 + 17  # two full blocks and a partial one
    config = EconomyConfig(num_agents=n, num_peers=8, **overrides)
    economy = Economy(config)
    economy.reset(seed=3)
    state = economy.state_arrays.replace(step=5, ages=np.arange(n) % config.max_age)
    jobs = JobTable.from_config(config)
    columns = [state.holdings, state.ages[:, None] / config.max_age, state.effort[:, None], state.utility_weights,
               state.broadcast, state.id_vectors, np.tile(season_features(jobs, 5), (n, 1))]
    if config.private_signals:
        columns.append(signals.self_columns(state, config))
    if config.spatial:
        columns.append(space.self_columns(state, economy.space, config.num_resources))
    reference = np.concatenate(columns, axis=1).astype(np.float32)
    features = observe.self_features(state, jobs, config, economy.space)
    assert features.dtype == np.float32 and features.shape == reference.shape
    assert np.array_equal(features.view(np.uint32), reference.view(np.uint32))


@pytest.mark.parametrize("overrides", [{}, {"private_signals": True}, {"broadcast_mode": "symbolic"}])
def test_public_features_in_blocks_equal_the_whole_columns_cast_to_float32(overrides):
    n = observe.FEATURE_BLOCK * 2 + 5
    config = EconomyConfig(num_agents=n, num_peers=8, **overrides)
    economy = Economy(config)
    economy.reset(seed=6)
    state = economy.state_arrays
    rng = np.random.default_rng(4)
    state = state.replace(holdings=rng.random((n, config.num_resources)) * 1e5,  # values float32 must round
                          job=rng.integers(-1, config.num_jobs, n))
    columns = [state.broadcast, state.id_vectors, state.holdings]
    if config.private_signals:
        columns.insert(2, (state.job[:, None] == np.arange(config.num_jobs)).astype(np.float64))
    reference = np.concatenate([column.astype(np.float32) for column in columns], axis=1)
    public = observe.public_features(state, config)
    assert public.dtype == np.float32 and np.array_equal(public.view(np.uint32), reference.view(np.uint32))
