"""Births against hand-worked references: who may be a parent and how often, what a newborn starts
with, and what survivors keep (docs/design.md section 2, stage 7). Written after a mutation run
(mutmut over the core stages) showed these rules unguarded."""
import numpy as np
import pytest
import torch

from homoecon_env import EconomyConfig
from homoecon_env.core import lifecycle
from homoecon_env.core.state import initial_state


def test_parents_are_drawn_in_proportion_to_shifted_fitness_without_replacement():
    """A grid of uniform pairs stands in for random draws, so frequencies are exact to the grid.
    Weights are fitness - min + 1e-6: [4, 1, 2, 1e-6] here (slot 4 is not eligible); not in increasing
    order, so that skipping the first parent's interval is visible."""
    fitness = np.array([5.0, 2.0, 3.0, 1.0, 100.0])
    eligible = np.array([True, True, True, True, False])
    grid = (np.arange(400) + 0.5) / 400
    uniforms = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    pairs = lifecycle.draw_parents(fitness, eligible, uniforms)
    weight = np.array([4.0, 1.0, 2.0, 1e-6])
    total = weight.sum()
    joint = np.zeros((4, 4))
    np.add.at(joint, (pairs[:, 0], pairs[:, 1]), 1.0 / len(pairs))
    expected = weight[:, None] / total * weight[None, :] / (total - weight[:, None])  # P(i) P(j | i), j != i
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(joint, expected, atol=3 / 400)
    assert not (pairs == 4).any() and (pairs[:, 0] != pairs[:, 1]).all()


def reproduce(dead_rows, num_agents=8, seed=0, **overrides):
    config = EconomyConfig(num_agents=num_agents, **overrides)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    state = initial_state(config, g).replace(
        lifetime_reward=rng.random(num_agents), broadcast=rng.uniform(-1, 1, (num_agents, config.broadcast_dim)),
        effort=rng.random(num_agents), job=rng.integers(0, 2, num_agents), generation=rng.integers(0, 4, num_agents),
        ages=rng.integers(1, 5, num_agents), step=7)
    dead = np.zeros(num_agents, dtype=bool)
    dead[dead_rows] = True
    new, births = lifecycle.reproduce(state, dead, True, g, config)
    return config, state, dead, new, births


@pytest.mark.parametrize("dead_rows", [[0, 3], [1, 2, 3, 4, 5, 6]])  # the second leaves exactly two survivors
def test_newborns_start_blank_and_survivors_keep_everything_but_their_gifts(dead_rows):
    config, old, dead, new, births = reproduce(dead_rows)
    born = np.flatnonzero(dead)
    assert births.founders == 0, "two survivors are enough to be parents"
    assert births.born.dtype == bool and births.parent_slots.dtype == np.int64 and new.generation.dtype == np.int64
    assert (new.broadcast[born] == 0).all() and (new.effort[born] == 0).all() and (new.job[born] == -1).all()
    assert (new.lifetime_reward[born] == 0).all() and (new.ages[born] == 0).all()
    assert (np.abs(new.id_vectors[born]) <= 1).all() and new.id_vectors[born].std() > 0.2  # uniform on [-1, 1]
    parents = births.parent_slots[born]
    assert (parents >= 0).all() and not dead[parents].any()
    assert (new.generation[born] == old.generation[parents].max(axis=1) + 1).all()
    survivors = np.flatnonzero(~dead)
    for field in ("broadcast", "effort", "job", "lifetime_reward", "ages", "generation", "utility_weights",
                  "id_vectors", "agent_ids"):
        np.testing.assert_array_equal(getattr(new, field)[survivors], getattr(old, field)[survivors], err_msg=field)
    assert (births.parent_slots[survivors] == -1).all()


def test_a_step_without_deaths_reports_no_births_in_the_usual_shapes():
    config, old, dead, new, births = reproduce([])
    assert births.born.dtype == bool and births.born.shape == (8,) and not births.born.any()
    assert births.parent_slots.dtype == np.int64 and births.parent_slots.shape == (8, 2) and births.founders == 0
    assert (births.parent_slots == -1).all()


def test_founders_come_only_below_two_survivors_with_fresh_heterogeneous_traits():
    config, old, dead, new, births = reproduce([0, 1, 2, 3, 4, 5, 6], num_agents=8)
    born = np.flatnonzero(dead)
    assert births.founders == 7 and (births.parent_slots == -1).all() and births.parent_slots.dtype == np.int64
    assert (new.generation[born] == 0).all() and new.generation.dtype == np.int64
    tastes = new.utility_weights[born]
    assert np.allclose(tastes.sum(axis=1), 1.0) and tastes.std() > 0.05, "Dirichlet tastes, not uniform"
    assert (new.holdings[born] > 0).all() and (new.holdings[born] < 2 * config.initial_holdings).all()


def test_founders_are_drawn_from_the_economy_generator_not_torch_global_state():
    torch.manual_seed(1)
    *_, first, _ = reproduce([0, 1, 2, 3, 4, 5, 6])
    torch.manual_seed(2)
    *_, second, _ = reproduce([0, 1, 2, 3, 4, 5, 6])
    for field in ("holdings", "utility_weights", "id_vectors"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def test_a_child_of_parents_who_ignore_a_good_still_values_it_a_little():
    """Tastes stay strictly positive (the + 1e-12 floor): log-utility and trade weights need it."""
    config = EconomyConfig(mutation=0.5)
    parents = np.array([[[1.0, 0.0], [1.0, 0.0]]])
    child = lifecycle.inherit_tastes(parents, np.array([[0.3]]), np.array([[0.2, -0.4]]), config)
    assert (child > 0).all() and child.sum() == pytest.approx(1.0)
