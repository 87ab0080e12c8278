"""How a newborn's networks are chosen under cultural inheritance (docs/design.md section 9).

`LearnerConfig.inheritance` picks one of three modes for the network learners (reinforce,
uniform_attention, ppo; the scripted and random learners have no networks and ignore it):

    genetic   crossover of the two parents' networks (a fair coin per network) + N(0, param_mutation^2)
              noise per entry: the seed's behaviour and the default (agents.reinforce)
    cultural  an exact copy of one teacher's networks; teachers are the living agents that were not
              born this step, drawn with replacement in proportion to prestige
    none      fresh networks, drawn as for the initial population

Prestige is wealth: the sum of an agent's holdings in the observation it last acted on. Wealth is
public (peers observe each other's holdings), so a pupil could in principle see whom to copy, and it
does not depend on whether the learner is learning (a frozen evaluation has no returns to rank by).
The draw is proportional (shifted like the economy's parent draw, `lifecycle.draw_parents`: weight =
wealth - min + 1e-6 over the teachers) rather than the single richest: copying only the top agent would
make every newborn of a step a clone of one network and collapse the population's diversity at once.
"""
from __future__ import annotations

import torch

_WEIGHT_FLOOR = 1e-6  # every eligible teacher keeps a positive weight (all equal: a uniform draw)


def choose_teachers(prestige: torch.Tensor, eligible: torch.Tensor, count: int,
                    generator: torch.Generator) -> torch.Tensor:
    """[count] teacher slots drawn with replacement from the ``eligible`` [N] bool slots, with probability
    proportional to prestige [N] - min over the eligible + 1e-6. One multinomial draw on ``generator``."""
    if not bool(eligible.any()):
        raise ValueError("choose_teachers: no eligible teacher (every slot holds a newborn)")
    score = prestige.to(torch.float64)
    low = score.masked_fill(~eligible, float("inf")).min()
    weight = torch.where(eligible, score - low + _WEIGHT_FLOOR, 0.0)
    return torch.multinomial(weight, count, replacement=True, generator=generator)
