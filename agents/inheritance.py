"""A newborn's networks, by inheritance mode (docs/design.md section 9): how the network learners write
their newborns' parameter rows.

`LearnerConfig.inheritance` picks one of three modes for the network learners (reinforce,
uniform_attention, ppo; the scripted and random learners have no networks and ignore it):

    genetic   crossover of the two parents' networks (a fair coin per network) + N(0, param_mutation^2)
              noise per entry: the seed's behaviour and the default
    cultural  an exact copy of one teacher's networks; teachers are the living agents that were not
              born this step, drawn with replacement in proportion to prestige
    none      fresh networks, drawn as for the initial population
Founders (no parents) get fresh networks whatever the mode.

Prestige is wealth: the sum of an agent's holdings in the observation it last acted on. Wealth is
public (peers observe each other's holdings), so a pupil could in principle see whom to copy, and it
does not depend on whether the learner is learning (a frozen evaluation has no returns to rank by).
The draw is proportional (shifted like the economy's parent draw, `lifecycle.draw_parents`: weight =
wealth - min + 1e-6 over the teachers) rather than the single richest: copying only the top agent would
make every newborn of a step a clone of one network and collapse the population's diversity at once.

`NewbornNetworks` writes the rows; the learner owns one and keeps the rest of a birth (optimizer state,
baseline). Every draw is made on the CPU with the learner's generator, so every device draws the same.
"""
from __future__ import annotations

from typing import Optional

import torch

from agents.networks import FlatLayout
from agents.optim import single_threaded_kernels
from homoecon_env.core.lifecycle import Births

_WEIGHT_FLOOR = 1e-6  # every eligible teacher keeps a positive weight (all equal: a uniform draw)
SMALL_BIRTHS = 1 << 20  # newborns x D up to this: births by whole-block operations, not into kept scratch
# more newborns: this many at a time (the same crossover and mutation, into kept [BIRTH_ROWS, D] scratch, written
# straight into their parameter rows). A multiple of 16: torch's CPU normal_ draws every uniform in order and turns
# them into normals 16 at a time, so blocks of a multiple of 16 entries (and a last one of at least 16: D is more)
# draw what one call over all newborns would (tests/test_births_memory.py checks it against torch.normal)
BIRTH_ROWS = 512


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


class NewbornNetworks:
    """Writes newborns' rows of a learner's parameters [N, D] (laid out by `layout`, in `dtype` on `device`) by
    the inheritance `mode`, with N(0, `mutation`^2) noise under the genetic mode. Keeps what births reuse: the
    crossover's column patterns and, for many newborns at once, [BIRTH_ROWS, D] scratch blocks."""

    def __init__(self, layout: FlatLayout, mode: str, mutation: float, dtype: torch.dtype, device: torch.device):
        self.layout, self.mode, self.mutation, self.dtype, self.device = layout, mode, mutation, dtype, device
        self.network_count = len(layout.spec)
        # [networks, D] 1 where a column belongs to the network (a few newborns' crossover)
        self.network_columns = torch.nn.functional.one_hot(layout.column_network, self.network_count).T.to(
            dtype=dtype, device=device)
        self._patterns = None  # [2^networks, D] many newborns' crossover patterns (`_second_patterns`)
        self._scratch = None  # kept scratch blocks ([BIRTH_ROWS, D] each, `_scratch_blocks`)

    def write(self, flat: torch.Tensor, births: Births, rows: torch.Tensor, targets: torch.Tensor,
              generator: torch.Generator, prestige: Optional[torch.Tensor]) -> tuple[Optional[tuple],
                                                                                      Optional[torch.Tensor]]:
        """Write the newborns' rows of `flat` [N, D]: `rows` [C] their slots (the economy's, on the CPU; at least
        one), `targets` the same on the learner's device. `prestige` [N] (float64, CPU; None: all equal) ranks
        the cultural mode's teachers. Returns (sources, teachers): sources (first [C], second [C], fresh [C]
        bool or None; on the device) names the slots whose optimizer state a newborn may take, None for fresh
        networks; teachers [N] (CPU) after a cultural birth each newborn's teacher slot, -1 elsewhere, else None."""
        if self.mode == "genetic":
            return self._genetic(flat, births, rows, targets, generator), None
        if self.mode == "cultural" and not births.founders:
            n = births.born.numel()
            prestige = prestige if prestige is not None else torch.zeros(n, dtype=torch.float64)
            chosen = choose_teachers(prestige, ~births.born, rows.numel(), generator)  # [C] on the CPU
            teachers = torch.full((n,), -1, dtype=torch.int64).index_copy_(0, rows, chosen)
            on_device = chosen.to(self.device)
            flat.index_copy_(0, targets, flat.index_select(0, on_device))  # teachers are never newborns
            return (on_device, on_device, None), teachers
        # none, or founders (no survivors to copy): fresh networks
        flat.index_copy_(0, targets, self.layout.init(rows.numel(), generator, self.dtype).to(self.device))
        return None, None

    def _genetic(self, flat: torch.Tensor, births: Births, rows: torch.Tensor, targets: torch.Tensor,
                 generator: torch.Generator) -> tuple:
        """Each newborn network one parent's (a fair coin), plus mutation noise; founders fresh. Returns (first [C],
        second [C] parent slots, founder [C] bool or None). Many newborns (more than SMALL_BIRTHS entries) are
        made BIRTH_ROWS at a time and written straight into their rows (no [C, D] block) when no parent is a
        newborn (an Economy's parents are survivors)."""
        count = rows.numel()
        parents = births.parent_slots.index_select(0, rows)  # [C, 2]
        g = generator
        # a fair coin per network: take the second parent's network where the draw is > 0.5
        second_parent = torch.rand(count, self.network_count, generator=g).round_().bool()  # [C, networks]
        if births.founders:  # no parents: a fresh network (drawn after the same draws as a child's)
            founder = parents[:, 0] < 0
            parents = parents.clamp(min=0)
        parents, second_parent = parents.to(self.device), second_parent.to(self.device)
        first, second = parents.unbind(1)
        if count * self.layout.size <= SMALL_BIRTHS:  # a few newborns: three whole-block operations (as below,
            # BIRTH_ROWS newborns at a time into kept scratch)
            take_second = second_parent.to(self.dtype) @ self.network_columns  # [C, D] 1 on the second's networks
            child = torch.lerp(flat.index_select(0, first), flat.index_select(0, second), take_second)  # exact at 0, 1
            noise = torch.empty(child.shape, dtype=self.dtype).normal_(0.0, self.mutation, generator=g)
            child.add_(noise.to(self.device))
        else:  # BIRTH_ROWS newborns at a time, into their rows (or, if a parent is a newborn, a [C, D] block)
            in_place = not bool(births.born.index_select(0, parents.view(-1).cpu()).any())
            child = None if in_place else torch.empty(count, self.layout.size, dtype=self.dtype, device=self.device)
            # the coins as a number: which of the 2^networks patterns of columns comes from the second parent
            pattern = (second_parent.long() << torch.arange(self.network_count, device=self.device)).sum(1)  # [C]
            patterns = self._second_patterns()  # [2^networks, D] bool
            with single_threaded_kernels():  # many small copies: two threads wait on each other (below)
                for low in range(0, count, BIRTH_ROWS):
                    high = min(count, low + BIRTH_ROWS)
                    part, first_rows, second_rows, take_second, noise = self._scratch_blocks(high - low)
                    torch.index_select(flat, 0, first[low:high], out=first_rows)
                    torch.index_select(flat, 0, second[low:high], out=second_rows)
                    torch.index_select(patterns, 0, pattern[low:high], out=take_second)
                    torch.where(take_second, second_rows, first_rows, out=part)  # exact copies
                    # + N(0, mutation^2) per entry: the draws and sums of torch.normal(child, mutation)
                    part.add_(noise.normal_(0.0, self.mutation, generator=g).to(self.device))
                    if in_place:
                        flat.index_copy_(0, targets[low:high], part)
                    else:
                        child[low:high] = part
        if births.founders:
            founder = founder.to(self.device)
            fresh = self.layout.init(int(founder.sum()), g, self.dtype).to(self.device)
            if child is None:
                flat.index_copy_(0, targets[founder], fresh)
            else:
                child[founder] = fresh
        if child is not None:  # (None: already written into the newborns' rows)
            flat.index_copy_(0, targets, child)
        return first, second, founder if births.founders else None

    def _second_patterns(self) -> torch.Tensor:
        """[2^networks, D] bool, row c: the columns of the networks whose bit is set in c (made once)."""
        if self._patterns is None:
            count = self.network_count
            bits = (torch.arange(2 ** count)[:, None] >> torch.arange(count)) & 1  # [2^networks, networks]
            self._patterns = bits.bool()[:, self.layout.column_network].to(self.device)
        return self._patterns

    def _scratch_blocks(self, count: int) -> tuple[torch.Tensor, ...]:
        """Five [count, D] scratch blocks, kept and grown as needed (a fresh block per step costs more in page
        faults than the copies): newborns' parameters, their first and second parents' rows, where the second's
        are taken (bool; on the device), and their mutation noise (on the CPU, where the generator draws it)."""
        if self._scratch is None or self._scratch[0].shape[0] < count:
            size = (max(count, 64), self.layout.size)
            self._scratch = tuple(torch.empty(size, dtype=self.dtype, device=self.device) for _ in range(3)) + (
                torch.empty(size, dtype=torch.bool, device=self.device), torch.empty(size, dtype=self.dtype))
        return tuple(scratch[:count] for scratch in self._scratch)
