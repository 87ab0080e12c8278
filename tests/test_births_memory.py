"""Many newborns at once (agents.inheritance, more than SMALL_BIRTHS entries): made BIRTH_ROWS at a time and
written straight into their parameter rows, with no [C, D] block. The reference is the documented rule
written out over all newborns at once: a fair coin per network, the whole network from that parent, then
torch.normal(child, param_mutation) with the learner's generator (one call over every newborn); the rows
must match it to the bit, whether the newborns fill whole blocks or not."""
from __future__ import annotations

import pytest
import torch

import agents.inheritance
from agents import LearnerConfig
from agents.reinforce import ReinforceLearner
from homoecon_env import EconomyConfig
from homoecon_env.core.lifecycle import Births

N = 96


def births(rows: list[int], parents: list[tuple[int, int]], founders: int = 0) -> Births:
    born = torch.zeros(N, dtype=torch.bool)
    born[rows] = True
    slots = torch.full((N, 2), -1, dtype=torch.int64)
    slots[rows] = torch.tensor(parents, dtype=torch.int64)
    return Births(born, slots, founders)


def documented_children(learner, before: torch.Tensor, generator: torch.Generator, parents: torch.Tensor):
    coins = torch.rand(parents.shape[0], len(learner.spec), generator=generator).round()
    expected = before[parents[:, 0]].clone()
    for network in range(len(learner.spec)):
        columns = (learner.layout.column_network == network).nonzero().view(-1)
        takers = (coins[:, network] == 1).nonzero().view(-1)
        expected[takers[:, None], columns] = before[parents[takers, 1]][:, columns]
    return torch.normal(expected, learner.config.param_mutation, generator=generator)


def give_birth(learner, rows, parents):
    """Run the births and check every child against `documented_children` from the rows as they were;
    returns (the rows before, a generator at the learner's state after the documented draws)."""
    before = learner.flat_params.clone()
    generator = torch.Generator()
    generator.set_state(learner.generator.get_state())
    learner.on_births(births(rows, parents))
    expected = documented_children(learner, before, generator, torch.tensor(parents))
    assert torch.equal(learner.flat_params[rows], expected)
    return before, generator


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("block", [16, 48])  # 37 newborns: blocks of 16, 16, 5, or one of 37
def test_many_newborns_in_blocks_are_the_documented_crossover_and_mutation(monkeypatch, dtype, block):
    monkeypatch.setattr(agents.inheritance, "SMALL_BIRTHS", 0)
    monkeypatch.setattr(agents.inheritance, "BIRTH_ROWS", block)
    learner = ReinforceLearner(EconomyConfig(num_agents=N, num_peers=8), LearnerConfig(seed=5, dtype=dtype))
    learner.flat_params.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))  # distinct parents
    rows = list(range(1, 2 * 37, 2))[:37]  # odd slots; parents among the even ones
    chooser = torch.Generator().manual_seed(2)
    parents = [tuple(int(x) * 2 for x in torch.randperm(N // 2, generator=chooser)[:2]) for _ in rows]
    before, generator = give_birth(learner, rows, parents)
    survivors = [slot for slot in range(N) if slot not in rows]
    assert torch.equal(learner.flat_params[survivors], before[survivors])
    assert torch.equal(learner.generator.get_state(), generator.get_state())  # nothing more was drawn


def test_a_newborn_parent_is_read_before_any_row_is_written(monkeypatch):
    """A Births whose parent is itself a newborn (not an Economy's): every child is made from the parents'
    rows as they were before the births, as over all newborns at once."""
    monkeypatch.setattr(agents.inheritance, "SMALL_BIRTHS", 0)
    monkeypatch.setattr(agents.inheritance, "BIRTH_ROWS", 16)
    learner = ReinforceLearner(EconomyConfig(num_agents=N, num_peers=8), LearnerConfig(seed=5))
    learner.flat_params.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    rows = list(range(40))
    parents = [(39 - slot, 95 - slot % 10) for slot in rows]  # the first children's parents are newborns too
    give_birth(learner, rows, parents)
