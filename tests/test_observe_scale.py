"""The large-population paths of observation (issue 19): peers gathered on first read, and the peer
sample's redraws, against independent references."""
import copy
import dataclasses
import pickle

import numpy as np
import pytest
import torch

from homoecon_env import EconomyConfig
from homoecon_env.core import Actions, Economy, observe

F64 = torch.float64


def resort_every_row(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """The sampler as first written: every round sorts every row and redraws, in row-major order, the
    later copy (in sort order) of each repeated offset, until no row repeats one."""
    offsets = torch.randint(1, n, (n, k), generator=generator)
    while True:
        ordered, where = offsets.sort(dim=1)
        repeated = ordered[:, 1:] == ordered[:, :-1]
        if not bool(repeated.any()):
            break
        duplicate = torch.zeros(n, k, dtype=torch.bool).scatter_(1, where[:, 1:], repeated)
        offsets[duplicate] = torch.randint(1, n, (int(duplicate.sum()),), generator=generator)
    return (torch.arange(n)[:, None] + offsets) % n


@pytest.mark.parametrize("n, k", [(66, 32), (70, 32), (300, 7), (20_000, 32), (70_000, 3), (9_000, 1)])  # many repeats
# to few (blocks of PEER_BLOCK rows, a partial last one) and none (K = 1)
def test_sampled_peers_and_random_stream_equal_resorting_every_row(n, k):
    """Sorting only the rows that hold a repeat draws the same peers, and leaves the generator where
    the full re-sort leaves it (so everything drawn after is the same too)."""
    for seed in range(5):
        fast, slow = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(observe.sample_peers(n, k, fast), resort_every_row(n, k, slow)), seed
        assert torch.equal(fast.get_state(), slow.get_state()), seed


def test_sampled_peers_are_distinct_other_rows():
    """With many redraws (K = 32 of 69 others), every row gets K distinct rows, none its own."""
    n, k = 70, 32
    peers = observe.sample_peers(n, k, torch.Generator().manual_seed(3)).numpy()
    assert peers.min() >= 0 and peers.max() < n
    assert (peers != np.arange(n)[:, None]).all()
    assert all(len(set(row)) == k for row in peers.tolist())


def run(config: EconomyConfig, steps: int) -> Economy:
    economy = Economy(config)
    economy.reset(seed=4)
    g = torch.Generator().manual_seed(1)
    n, r = config.num_agents, config.num_resources
    for _ in range(steps):
        move = torch.randint(0, 5, (n,), generator=g) if config.spatial else None
        broadcast = torch.rand(n, config.broadcast_dim, generator=g, dtype=F64) * 2 - 1
        job = torch.randint(0, config.num_jobs, (n,), generator=g)
        economy.step(Actions(broadcast, job, torch.rand(n, generator=g, dtype=F64),
                             torch.rand(n, r, generator=g, dtype=F64), torch.rand(n, r, generator=g, dtype=F64), move))
    return economy


@pytest.mark.parametrize("config, steps", [
    (EconomyConfig(num_agents=300, num_peers=8, max_steps=50), 3),  # sampled peers, all alive
    (EconomyConfig(num_agents=60, num_peers=8, max_steps=4), 4),  # the final step: dead rows masked
    (EconomyConfig(num_agents=120, num_peers=16, world_width=3, world_height=3, peer_radius=0), 2),  # padding
])
def test_peers_read_later_equal_a_numpy_gather_bit_for_bit(config, steps):
    """``observation.peers`` (gathered on first read) is the peers' public rows with NumPy, the same float32
    bits where the mask is 1, and zero where it is 0."""
    economy = run(config, steps)
    observation, state = economy.observation, economy.state_arrays
    index, mask = observation.peer_index.numpy(), observation.peer_mask.numpy()
    assert ((index >= 0) == (mask == 1)).all() and (state.alive[index[index >= 0]]).all()
    expected = observe.public_features(state, config).take(np.maximum(index, 0), axis=0)
    peers = observation.peers
    assert peers.dtype == torch.float32 and peers.shape == expected.shape
    shown = mask == 1
    assert np.array_equal(peers.numpy()[shown].view(np.uint32), expected[shown].view(np.uint32))
    assert (peers.numpy()[~shown] == 0).all()
    assert (~shown).any() == (config.max_steps == steps or config.spatial)  # each masking case is exercised
    assert observation.peers is peers  # gathered once


def test_an_observation_with_peers_gathered_later_copies_pickles_and_replaces_like_any():
    economy = run(EconomyConfig(num_agents=100, num_peers=8), 1)
    observation = economy.observation
    copied, pickled = copy.deepcopy(observation), pickle.loads(pickle.dumps(observation))
    replaced = dataclasses.replace(observation, peer_mask=torch.zeros_like(observation.peer_mask))
    eager = observe.Observation(observation.self_features, observation.peers.clone(), observation.peer_mask,
                                observation.peer_index)
    for other in (copied, pickled, replaced, eager):
        assert torch.equal(other.peers, observation.peers)
    assert replaced.peer_mask.sum() == 0
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        observation.nonsense  # noqa: B018


def test_the_all_ones_mask_made_on_first_read_is_ones_once_and_copies_like_any():
    """An all-live sampled observation's mask (made on first read) is float32 ones [N, K], the same tensor
    on every read; copies and pickles taken before the first read give the same mask."""
    economy = run(EconomyConfig(num_agents=100, num_peers=8), 1)
    observation = economy.observation
    assert "peer_mask" not in observation.__dict__  # not made yet: the all-live case
    copied, pickled = copy.deepcopy(observation), pickle.loads(pickle.dumps(observation))
    mask = observation.peer_mask
    assert mask.dtype == torch.float32 and mask.shape == (100, 8) and bool((mask == 1).all())
    assert observation.peer_mask is mask
    for other in (copied, pickled, dataclasses.replace(observation)):
        assert torch.equal(other.peer_mask, mask) and torch.equal(other.peers, observation.peers)
