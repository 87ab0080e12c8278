"""benchmarks/chain_imitation.py: the plan's actions as pre-images, and imitation that copies the plan."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from agents import make_learner  # noqa: E402
from benchmarks.chain_imitation import arm_label, main  # noqa: E402
from homoecon_env.core import Economy  # noqa: E402
from homoecon_env.scenarios import SCENARIOS  # noqa: E402


def test_imitation_copies_the_plan_and_makes_final_goods(tmp_path):
    """Cloning the plan through REINFORCE's update with unit advantages: after a few hundred steps the
    learner's own job is the plan's for nearly every agent, and the plan makes and trades final goods;
    `advantages` is the learner's own again afterwards."""
    from agents import reinforce
    original = reinforce.advantages
    out = tmp_path / "runs.jsonl"
    assert main(["--seeds", "2", "--num-agents", "16", "--imitate-steps", "400", "--rl-steps", "100",
                 "--report-every", "100", "--out", str(out)]) == 0
    assert reinforce.advantages is original
    row = json.loads(out.read_text().splitlines()[-1])
    imitation = [point for point in row["curve"] if point["phase"] == "imitation"]
    assert imitation[0]["own_job_on_plan"] < imitation[-1]["own_job_on_plan"]
    assert imitation[-1]["own_job_on_plan"] > 0.9
    assert imitation[-1]["final_made"] > 0 and imitation[-1]["final_traded"] > 0
    assert row["curve"][-1]["phase"] == "reinforcement"
    figure = tmp_path / "curves.png"  # --seeds with no seed: only draw what --out holds
    assert main(["--seeds", "--out", str(out), "--plot", str(figure)]) == 0
    assert len(out.read_text().splitlines()) == 1 and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arm_labels_name_only_the_settings_that_differ_from_the_learners_defaults():
    base = {"learner": "reinforce", "rl_learning_rate": None, "shared": 0.0, "entropy_coef": None, "max_age": 100_000}
    assert arm_label(base) == arm_label({**base, "entropy_coef": 0.01}) == "reinforce"
    assert arm_label({**base, "rl_learning_rate": 0.001, "shared": 1.0, "entropy_coef": 0.0, "max_age": 10}) == \
        "reinforce, lr 0.001, shared 1, entropy 0, lives of 10"
    assert arm_label({**base, "learner": "ppo", "entropy_coef": 0.01}) == "ppo, entropy 0.01"


@pytest.mark.parametrize("argv", [["--shared", "2"], ["--report-every", "0"]])
def test_bad_options_are_refused_by_name(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert argv[0] in capsys.readouterr().err


def test_frozen_networks_keep_their_weights_while_the_learning_one_moves():
    """`FrozenNetworks(learner, ["trading_net"])`: after updates and `restore`, every other network's weights
    are bit for bit those when frozen, and the trading network's have moved."""
    from benchmarks.chain_imitation import FrozenNetworks
    config = SCENARIOS["supply_chain"]().replace(num_agents=10, max_age=1000)
    learner = make_learner("reinforce", config)
    economy = Economy(config)
    observation = economy.reset(seed=4)
    before = learner.flat_params.clone()
    frozen = FrozenNetworks(learner, ["trading_net"])
    for _ in range(10):
        out = economy.step(learner.act(observation))
        learner.update(out)
        frozen.restore(learner)
        observation = out.observation
    names = list(learner.spec)
    trading = torch.cat([torch.arange(low, high)
                         for low, high in learner.layout.network_ranges[names.index("trading_net")]])
    others = torch.ones(before.shape[1], dtype=torch.bool)
    others[trading] = False
    assert torch.equal(learner.flat_params[:, others], before[:, others])
    assert not torch.equal(learner.flat_params[:, trading], before[:, trading])
    with pytest.raises(ValueError, match="value_net"):
        FrozenNetworks(learner, ["value_net"])


def test_learn_is_refused_when_newborns_would_get_frozen_weights(capsys):
    """--learn with lives shorter than the run (newborns) or with PPO is refused, naming --learn."""
    with pytest.raises(SystemExit):
        main(["--seeds", "1", "--learn", "trading_net", "--max-age", "10", "--out", "/dev/null"])
    assert "--learn" in capsys.readouterr().err


def test_gradient_snr_tells_noise_from_a_steady_gradient():
    """`gradient_snr`: updates that are zero-mean noise give about 1 / sqrt(U) (the floor); a steady
    gradient plus the same noise gives far more; the columns pick each network."""
    from benchmarks.chain_imitation import gradient_snr
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(400, 30, 8, generator=generator)
    steady = noise.clone()
    steady[:, :, 4:] += 1.0  # the second network's columns have a mean gradient of norm 2 against noise of 2
    columns = {"first": torch.arange(0, 4), "second": torch.arange(4, 8)}
    snr = gradient_snr(steady, columns)
    assert snr["noise_floor"] == pytest.approx(0.05)
    assert 0.02 < snr["first"] < 0.1
    assert snr["second"] == pytest.approx(1.0, rel=0.15)


def test_gradient_snr_is_reported_for_each_network_after_imitation(tmp_path):
    out = tmp_path / "runs.jsonl"
    assert main(["--seeds", "1", "--num-agents", "8", "--imitate-steps", "20", "--rl-steps", "30",
                 "--report-every", "10", "--gradient-snr", "--out", str(out)]) == 0
    snr = json.loads(out.read_text())["gradient_snr"]
    assert set(snr) == {"social_filter_net", "broadcast_net", "production_net", "trading_net", "consumption_net",
                        "noise_floor"}
    assert snr["noise_floor"] == pytest.approx(1 / 6 ** 0.5)  # 30 steps: 6 updates of 5
    assert all(value > 0 for value in snr.values())
