"""The economy's blocked per-agent passes on worker threads (issue 19): every block is run once, in
order; 1 thread and several give the same bits (the market, the peer sample, the features, whole
trajectories), at sizes whose last block is partial; the pool survives pickle, deepcopy and fork."""
import copy
import multiprocessing
import pickle
import threading
import warnings

import numpy as np
import pytest
import torch

from homoecon_env import EconomyConfig, parallel_env
from homoecon_env.core import Economy, actions, observe
from homoecon_env.core.actions import Actions
from homoecon_env.core.threads import BlockPool
from homoecon_env.trade import clear_market, market, newton

F64 = torch.float64


def bits(tensor) -> bytes:
    return np.ascontiguousarray(tensor.numpy() if isinstance(tensor, torch.Tensor) else tensor).tobytes()


def many_threads() -> BlockPool:
    """Three threads, even over a few blocks."""
    return BlockPool(threads=3, min_blocks_per_thread=1)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few dozen rows, so that small problems span many blocks, the last one partial."""
    monkeypatch.setattr(market, "BLOCK", 64)
    monkeypatch.setattr(newton, "BLOCK", 64)
    monkeypatch.setattr(observe, "PEER_BLOCK", 24)
    monkeypatch.setattr(observe, "FEATURE_BLOCK", 40)
    monkeypatch.setattr(actions, "CHECK_BLOCK", 32)


def block_threads() -> int:
    return sum(thread.name.startswith("homoecon-block") for thread in threading.enumerate())


@pytest.mark.parametrize("num_blocks, threads", [(1, 3), (2, 3), (7, 3), (10, 4), (5, 1)])
def test_every_block_runs_once_in_order_and_results_come_back_in_block_order(num_blocks, threads):
    pool = BlockPool(threads=threads, min_blocks_per_thread=1)
    seen, lock = [], threading.Lock()

    def work(run):
        with lock:
            seen.append((list(run), threading.get_ident()))
        return [block * 10 for block in run]

    results = pool.run(work, list(range(num_blocks)))
    assert [value for run in results for value in run] == [block * 10 for block in range(num_blocks)]
    runs = sorted(run for run, _ in seen)
    assert [block for run in runs for block in run] == list(range(num_blocks))  # a partition into runs
    assert all(run == list(range(run[0], run[-1] + 1)) for run in runs)  # each run contiguous
    assert len(seen) == min(threads, num_blocks)  # one run per thread (an idle worker may take two)


def test_thread_count_follows_torch_and_stays_one_below_the_threshold():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pool = BlockPool()
        assert pool.thread_count(4) == 2 and pool.thread_count(3) == 1 and pool.thread_count(1) == 1
        torch.set_num_threads(1)
        assert pool.thread_count(1000) == 1
    finally:
        torch.set_num_threads(before)


def test_an_error_in_a_worker_is_raised_after_every_run_has_finished():
    pool = BlockPool(threads=3, min_blocks_per_thread=1)
    finished = []

    def work(run):
        if 4 in run:
            raise RuntimeError("block 4")
        finished.extend(run)

    with pytest.raises(RuntimeError, match="block 4"):
        pool.run(work, list(range(9)))
    assert sorted(finished) == [0, 1, 2, 6, 7, 8]  # the other runs completed before the error surfaced


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_thread_counts_are_refused_by_name(bad):
    with pytest.raises(ValueError, match="threads"):
        BlockPool(threads=bad)
    with pytest.raises(ValueError, match="min_blocks_per_thread"):
        BlockPool(min_blocks_per_thread=bad)
    with pytest.raises(ValueError, match="pool"):
        clear_market(np.ones((3, 2)), np.ones((3, 2)), pool=bad)


@pytest.mark.parametrize("num_agents, num_goods, method", [
    (1000, 2, "pgd"), (777, 3, "newton"), (450, 5, "pgd"), (201, 1, "newton")])
def test_markets_on_one_thread_and_several_give_the_same_bits(small_blocks, num_agents, num_goods, method):
    """Enumerated IR sets (R <= 3) and sorted goods (R = 5), water-filled starts and warm ones; holdings
    with zeros and agents valuing nothing, so IR binds for some and not others. The workers keep the
    caller's np.errstate: the market's ignored 0/0 raise no warning there either."""
    rng = np.random.default_rng(num_agents)
    warnings.simplefilter("error", RuntimeWarning)  # pytest restores the filters after the test
    for trial in range(3):
        holdings = rng.exponential(1.0, (num_agents, num_goods)) * (rng.random((num_agents, num_goods)) < 0.7)
        weights = rng.dirichlet(np.ones(num_goods), num_agents) * (rng.random((num_agents, 1)) < 0.95)
        results = {}
        for name, pool in (("none", None), ("one", BlockPool(threads=1)), ("three", many_threads())):
            first = clear_market(holdings, weights, method=method, pool=pool)
            warm = clear_market(holdings * 1.1, weights, method=method, warm_start=first, pool=pool)
            results[name] = [bits(result.allocation) + bits(result.prices) + bits(result.multipliers)
                             + str((result.iterations, result.kkt_residual)).encode() for result in (first, warm)]
        assert results["one"] == results["none"], trial
        assert results["three"] == results["none"], trial
    assert block_threads() >= 2  # the three-thread pool's workers did run


def test_the_peer_sample_on_one_thread_and_several_gives_the_same_bits(small_blocks):
    for n, k in ((500, 8), (333, 32), (70, 32)):  # 70, 32: the permutation path, no blocks
        one = observe.sample_peers(n, k, torch.Generator().manual_seed(n), BlockPool(threads=1)).numpy()
        three = observe.sample_peers(n, k, torch.Generator().manual_seed(n), many_threads()).numpy()
        assert np.array_equal(one, three)
        assert (one != np.arange(n)[:, None]).all() and all(len(set(row)) == k for row in one.tolist())


def random_actions(config: EconomyConfig, g: torch.Generator) -> Actions:
    """Some values outside their Boxes, which the checks clip."""
    n, r = config.num_agents, config.num_resources
    move = torch.randint(0, 5, (n,), generator=g) if config.spatial else None
    if config.symbolic:
        broadcast = torch.randint(0, config.vocab_size, (n, config.message_length), generator=g)
    else:
        broadcast = torch.rand(n, config.broadcast_dim, generator=g, dtype=F64) * 2.4 - 1.2
    job = torch.randint(0, config.num_jobs, (n,), generator=g)

    def share(*shape):
        return torch.rand(*shape, generator=g, dtype=F64) * 1.2 - 0.1

    return Actions(broadcast, job, share(n), share(n, r), share(n, r), move)


def step_digest(economy: Economy, g: torch.Generator, steps: int) -> list:
    """What the steps emit, as bytes: observations (peers gathered), trade, rewards, then the state."""
    digests = []
    for _ in range(steps):
        out = economy.step(random_actions(economy.config, g))
        o = out.observation
        digests.append(b"".join(bits(t) for t in (o.self_features, o.peers, o.peer_mask, o.peer_index, out.reward,
                                                    out.trade.allocation, out.trade.prices, out.trade.multipliers)))
    state = economy.state_arrays
    digests.append(bits(state.holdings) + bits(state.ages) + bits(state.alive))
    return digests


CONFIGS = [
    EconomyConfig(num_agents=300, num_peers=8, max_steps=6),  # the last step masks the dead
    EconomyConfig(num_agents=257, num_peers=16, private_signals=True),
    EconomyConfig(num_agents=190, num_peers=8, broadcast_mode="symbolic"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_trajectories_on_one_thread_and_several_give_the_same_bits(small_blocks, config):
    runs = []
    for pool in (BlockPool(threads=1), many_threads()):
        economy = Economy(config)
        economy.pool = pool
        economy.reset(seed=5)
        runs.append(step_digest(economy, torch.Generator().manual_seed(8), 6))
    assert runs[0] == runs[1]


def test_a_non_finite_action_late_in_the_rows_is_refused_alike_on_one_thread_and_several(small_blocks):
    config = EconomyConfig(num_agents=300, num_peers=8)
    messages = []
    for pool in (BlockPool(threads=1), many_threads()):
        economy = Economy(config)
        economy.pool = pool
        economy.reset(seed=1)
        before = bits(economy.state_arrays.holdings)
        bad = random_actions(config, torch.Generator().manual_seed(2))
        bad.consume[271, 1] = float("nan")
        with pytest.raises(ValueError) as refused:
            economy.step(bad)
        messages.append(str(refused.value))
        assert bits(economy.state_arrays.holdings) == before  # nothing changed
    assert "consume" in messages[0] and "nan" in messages[0] and messages[0] == messages[1]


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda economy: pickle.loads(pickle.dumps(economy))])
def test_an_economy_copied_after_threaded_steps_steps_on_like_the_original(small_blocks, duplicate):
    economy = Economy(CONFIGS[0])
    economy.pool = many_threads()
    economy.reset(seed=2)
    step_digest(economy, torch.Generator().manual_seed(1), 2)  # the pool's threads now exist
    twin = duplicate(economy)
    assert twin.pool is not economy.pool and twin.pool.threads == 3
    later = step_digest(economy, torch.Generator().manual_seed(3), 2)
    assert step_digest(twin, torch.Generator().manual_seed(3), 2) == later


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda env: pickle.loads(pickle.dumps(env))])
def test_an_env_copied_after_threaded_steps_steps_on_like_the_original(small_blocks, duplicate):
    env = parallel_env(EconomyConfig(num_agents=300, num_peers=8))
    env.economy.pool = many_threads()
    env.reset(seed=3)
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    env.step(actions)  # the pool's threads now exist
    twin = duplicate(env)
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    mine, theirs = env.step(actions), twin.step(actions)
    for agent in env.agents[:: 37]:
        assert np.array_equal(mine[0][agent]["self"], theirs[0][agent]["self"]) and mine[1][agent] == theirs[1][agent]
    assert np.array_equal(env.economy.state_arrays.holdings, twin.economy.state_arrays.holdings)


def _step_in_child(economy: Economy, queue) -> None:
    queue.put(step_digest(economy, torch.Generator().manual_seed(4), 2))


def test_a_forked_child_steps_the_economy_on_its_own_threads(small_blocks):
    economy = Economy(CONFIGS[0])
    economy.pool = many_threads()
    economy.reset(seed=6)
    step_digest(economy, torch.Generator().manual_seed(1), 1)  # threads made in the parent
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(economy, queue))
    child.start()
    from_child = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert from_child == step_digest(economy, torch.Generator().manual_seed(4), 2)
