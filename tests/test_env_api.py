"""PettingZoo API conformance: the real test utilities, PettingZoo warnings raised as errors."""
import warnings

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo.test import api_test, parallel_api_test

import homoecon_env

# Advisories any env with Dict spaces and a growing possible_agents raises (docs/design.md section 3).
TOLERATED = (
    "Observation is not a NumPy array",
    "Observation space for each agent probably should be gymnasium.spaces.box or gymnasium.spaces.discrete",
    "Action space for each agent probably should be gymnasium.spaces.box or gymnasium.spaces.discrete",
    "No agents present but not all possible_agents are terminated or truncated",
)


def strict(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)
        for text in TOLERATED:
            warnings.filterwarnings("ignore", message=text.replace(".", r"\."))
        fn()


def test_parallel_api_test_passes_with_warnings_as_errors():
    strict(lambda: parallel_api_test(homoecon_env.parallel_env(num_agents=12, max_steps=80), num_cycles=300))


def test_aec_api_test_passes_with_warnings_as_errors():
    strict(lambda: api_test(homoecon_env.env(num_agents=6, max_steps=40), num_cycles=200))


def test_sampled_peers_pass_parallel_api_test():
    strict(lambda: parallel_api_test(homoecon_env.parallel_env(num_agents=15, num_peers=4, max_steps=50),
                                     num_cycles=100))


def test_spaces_are_one_cached_object_with_the_contract_layout():
    env = homoecon_env.parallel_env(num_agents=12)
    env.reset(seed=0)
    a, b = env.agents[:2]
    assert env.observation_space(a) is env.observation_space(b)
    assert env.action_space(a) is env.action_space("agent_999")
    assert env.metadata["name"] == "homoecon_v0"
    osp, asp = env.observation_space(a), env.action_space(a)
    c = env.config
    s = 2 * c.num_resources + 2 + c.broadcast_dim + c.id_dim + 2 * c.num_jobs
    assert osp["self"].shape == (s,) and osp["peers"].shape == (11, c.broadcast_dim + c.id_dim + c.num_resources)
    assert osp["peer_mask"].shape == (11,)
    assert isinstance(asp["job"], spaces.Discrete) and asp["job"].n == 2
    for sub in list(osp.spaces.values()) + [asp[k] for k in ("broadcast", "effort", "trade_weights", "consume")]:
        assert sub.dtype == np.float32


def test_possible_agents_is_lazy_and_exact():
    env = homoecon_env.parallel_env(num_agents=5000, num_peers=16, max_steps=1000)
    names = env.possible_agents
    assert len(names) == 5000 * 1001
    assert "agent_5004999" in names and "agent_5005000" not in names
    assert "agent_01" not in names and "bob" not in names and 3 not in names
    assert names[0] == "agent_0" and names[-1] == "agent_5004999"
    assert not isinstance(names, (list, tuple))


def test_render_returns_an_rgb_frame():
    env = homoecon_env.parallel_env(num_agents=8, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # not a blank picture
    assert homoecon_env.parallel_env(num_agents=3).render() is None
    with pytest.raises(ValueError, match="render_mode"):
        homoecon_env.parallel_env(render_mode="ansi")


def test_state_is_a_fixed_size_finite_float32_vector():
    env = homoecon_env.parallel_env(num_agents=9, max_steps=30)
    env.reset(seed=2)
    state = env.state()
    assert state.dtype == np.float32 and np.isfinite(state).all()
    assert env.state_space.shape == state.shape
    rng = np.random.default_rng(0)
    from conftest import random_actions_dict
    for _ in range(30):
        env.step(random_actions_dict(env, rng))
        assert env.state().shape == state.shape


def test_editing_an_observation_in_place_does_not_reach_the_env():
    env = homoecon_env.parallel_env(num_agents=6, max_steps=10)
    obs, _ = env.reset(seed=0)
    state = env.state().copy()
    obs["agent_0"]["self"][:] = 123.0
    obs["agent_1"]["peers"][:] = -7.0
    assert np.array_equal(env.state(), state)
    assert env.economy.observation.self_features.max().item() < 123.0
