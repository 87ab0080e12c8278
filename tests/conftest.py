"""Shared test helpers: small economies and valid random actions."""
import numpy as np
import pytest
import torch

from homoecon_env.core import Actions

pytest.register_assert_rewrite("trade_markets")  # its checks report values like a test file's


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: small batched ops run fastest so (two threads on two busy
    cores mostly wait). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_actions_dict(env, rng: np.random.Generator) -> dict:
    """Valid random actions for every live agent of a parallel env."""
    space = env.action_space(env.agents[0]) if env.agents else None
    out = {}
    for name in env.agents:
        out[name] = {
            "broadcast": rng.uniform(-1, 1, space["broadcast"].shape).astype(np.float32),
            "job": int(rng.integers(space["job"].n)),
            "effort": rng.uniform(0, 1, (1,)).astype(np.float32),
            "trade_weights": rng.uniform(0, 1, space["trade_weights"].shape).astype(np.float32),
            "consume": rng.uniform(0, 1, space["consume"].shape).astype(np.float32),
        }
    return out


def actions_from_dict(env, actions: dict) -> Actions:
    """The batched form (slot order) of a dict of actions, as a trainer would build it."""
    names = env._slot_names

    def stack(key):
        return torch.tensor(np.array([actions[n][key] for n in names]), dtype=torch.float64)

    return Actions(broadcast=stack("broadcast"), job=torch.tensor([actions[n]["job"] for n in names]),
                   effort=stack("effort")[:, 0], trade_weights=stack("trade_weights"), consume=stack("consume"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def flip_a_stored_bit(checkpoint_path) -> None:
    """Flip one bit inside the stored bytes of a run checkpoint's economy holdings: silent corruption
    of the content that the zip container itself does not notice."""
    from agents.checkpoint import load_checkpoint

    data = bytearray(open(checkpoint_path, "rb").read())
    holdings = load_checkpoint(checkpoint_path)["economy"]["state"]["holdings"]
    offset = bytes(data).find(holdings.numpy().tobytes())
    assert offset > 0, "the holdings' bytes are not stored verbatim"
    data[offset + 3] ^= 0x01
    with open(checkpoint_path, "wb") as stream:
        stream.write(bytes(data))
