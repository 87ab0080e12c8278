"""The README's plug-in example works: a new Learner registered in LEARNERS drives the economy."""
import re
from pathlib import Path

import torch

from agents import LEARNERS, make_learner
from agents.base import Learner
from homoecon_env import EconomyConfig
from homoecon_env.core import Economy


def readme_learner_source() -> str:
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = text.split("## Plug in another algorithm", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_plugin_example_runs_through_the_economy(monkeypatch):
    monkeypatch.setattr("agents.LEARNERS", dict(LEARNERS))
    namespace = {}
    exec(compile(readme_learner_source(), "README.md", "exec"), namespace)
    config = EconomyConfig(num_agents=12, max_steps=40)
    learner = make_learner("greedy", config, None)
    assert isinstance(learner, Learner)
    economy = Economy(config)
    observation = economy.reset(0)
    rewards = []
    while not economy.done:
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
        rewards.append(out.reward.mean().item())
    jobs = economy.state.job
    assert len(rewards) == 40 and all(r == r for r in rewards)
    # the greedy learner works the job in season: at t = 39 hunting (phase 0) still beats gathering
    assert torch.equal(jobs[economy.state.alive], torch.ones_like(jobs[economy.state.alive]))


def test_readme_quick_loop_runs_to_the_end(capsys):
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    loop = re.search(r"A ten-line loop.*?```python\n(.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(loop, "README.md", "exec"), namespace)
    assert namespace["env"].agents == [] and "gini" in namespace["env"].last_stats
    assert capsys.readouterr().out.strip()
