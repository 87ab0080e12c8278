"""Mixed populations (agents.mixed): slots cut by fractions, each group acting and learning on its own
slots only, newborns joining their first parent's group, a bit-exact resume (docs/design.md section 12)."""
import copy
import dataclasses

import pytest
import torch
from test_learners import run

from agents import make_learner
from agents.baselines import RandomLearner
from agents.config import LearnerConfig
from agents.mixed import MixedLearner, group_sizes, parse_mix
from agents.reinforce import ReinforceLearner
from agents.scripted import ScriptedLearner
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy


def test_mix_text_is_parsed_in_order():
    assert parse_mix("llm=0.1, reinforce=0.9") == [("llm", 0.1), ("reinforce", 0.9)]
    assert parse_mix("agents.scripted:ScriptedIgnorer=0.5,random=0.5")[0] == ("agents.scripted:ScriptedIgnorer", 0.5)


@pytest.mark.parametrize("text, words", [
    ("llm=0.1,reinforce=0.8", "sum to 1"), ("llm", "learner=fraction"), ("llm=x,reinforce=1", "not a number"),
    ("llm=nan,reinforce=1", "(0, 1]"), ("llm=-0.5,reinforce=1.5", "(0, 1]"), ("banker=1", "banker"),
    ("mixed=1", "cannot contain"), ("random=0.5,random=0.5", "twice"), ("", "mix must list")])
def test_a_bad_mix_is_one_value_error_naming_mix(text, words):
    with pytest.raises(ValueError, match="mix") as error:
        parse_mix(text)
    assert words in str(error.value)
    with pytest.raises(ValueError, match="mix"):
        LearnerConfig(mix=text)


def test_group_sizes_follow_the_largest_remainders():
    assert group_sizes([0.1, 0.9], 10) == [1, 9]
    assert group_sizes([1 / 3, 1 / 3, 1 / 3], 10) == [4, 3, 3]  # one slot left: the first of the tied remainders
    assert group_sizes([0.25, 0.75], 6) == [2, 4]  # 1.5 and 4.5: tie, the earlier group takes the slot
    with pytest.raises(ValueError, match="no slot"):
        group_sizes([0.01, 0.99], 10)
    assert group_sizes([0.01, 0.99], 10, allow_empty=True) == [0, 10]  # a group that starts extinct


def test_train_refuses_a_mix_that_leaves_a_group_without_a_slot(tmp_path, capsys):
    from homoecon_lab.cli import parse_train_args

    with pytest.raises(SystemExit) as stop:
        parse_train_args(["--learner", "mixed", "--mix", "llm=0.04,reinforce=0.96", "--num-agents", "10",
                          "--run-dir", str(tmp_path / "run")])
    assert stop.value.code == 2 and "argument --mix" in capsys.readouterr().err


def _run(learner, config, steps, seed=2):
    economy = Economy(config)
    observation = economy.reset(seed=seed)
    log = []
    for _ in range(steps):
        groups = learner.group_of.clone()
        actions = learner.act(observation)
        out = economy.step(actions)
        log.append((observation, actions, out, learner.update(out), groups))
        learner.on_births(out.births)
        observation = out.observation
    return economy, log


def test_each_group_acts_for_its_own_slots_as_its_learner_alone_would():
    config = EconomyConfig(num_agents=10)
    mixed = MixedLearner(config, LearnerConfig(mix="scripted=0.3,random=0.7", seed=4))
    assert mixed.group_of.tolist() == [0, 0, 0] + [1] * 7
    observation = Economy(config).reset(seed=1)
    actions = mixed.act(observation)
    scripted = ScriptedLearner(config).act(observation)
    randomly = RandomLearner(config, LearnerConfig(seed=5)).act(observation)  # the second group's seed: seed + 1
    for name in ("job", "effort", "trade_weights", "consume", "broadcast"):
        assert torch.equal(getattr(actions, name)[:3], getattr(scripted, name)[:3]), name
        assert torch.equal(getattr(actions, name)[3:], getattr(randomly, name)[3:]), name


def test_newborns_join_their_first_parents_group_and_inherit_within_it():
    config = EconomyConfig(num_agents=12, max_age=3, max_steps=30)
    mixed = MixedLearner(config, LearnerConfig(mix="reinforce=0.5,scripted=0.5", update_every=3))
    _, log = _run(mixed, config, 12)
    births = 0
    for step, (_, _, out, _, before) in enumerate(log):
        after = log[step + 1][4] if step + 1 < len(log) else mixed.group_of
        born = out.births.born
        parents = out.births.parent_slots
        for slot in born.nonzero().view(-1).tolist():
            births += 1
            expected = before[parents[slot, 0]] if parents[slot, 0] >= 0 else before[slot]
            assert after[slot] == expected
        assert torch.equal(after[~born], before[~born])  # only newborns change group
    assert births > 0


def test_a_group_learns_only_from_its_own_slots():
    config = EconomyConfig(num_agents=8, max_age=10_000, max_steps=30, min_consumption=0.0)  # nobody dies
    mixed = MixedLearner(config, LearnerConfig(mix="reinforce=0.5,scripted=0.5", update_every=4))
    reinforce = mixed.learners[0]
    before = reinforce.flat_params.clone()
    _, log = _run(mixed, config, 8)
    assert not any(bool(out.births.born.any()) for _, _, out, _, _ in log)
    changed = (reinforce.flat_params != before).any(dim=1)
    assert changed[:4].all() and not changed[4:].any()  # the scripted group's rows in reinforce never learn
    reported = [metrics for *_, metrics, _ in log if metrics]
    assert len(reported) == 2 and reported[0]["reinforce/active_agents"] == 4


def test_a_reinforce_group_learns_as_a_reinforce_population_of_its_own_slots():
    """Independent reference: the mixed learner's reinforce rows equal a plain ReinforceLearner's rows
    driven with the same actions in the same economy (rows are independent agents)."""
    config = EconomyConfig(num_agents=6, max_age=10_000, max_steps=30, min_consumption=0.0)  # nobody dies
    learner_config = LearnerConfig(mix="reinforce=0.5,scripted=0.5", update_every=3)
    mixed = MixedLearner(config, learner_config)
    plain = ReinforceLearner(config, dataclasses.replace(learner_config, seed=learner_config.seed))
    economy = Economy(config)
    observation = economy.reset(seed=9)
    for _ in range(6):
        actions = mixed.act(observation)
        plain_actions = plain.act(observation)
        assert torch.equal(actions.job[:3], plain_actions.job[:3])
        out = economy.step(actions)
        mixed.update(out)
        plain.update(dataclasses.replace(out, death_cause=torch.tensor([0, 0, 0, 1, 1, 1])))
        observation = out.observation
    assert torch.equal(mixed.learners[0].flat_params[:3], plain.flat_params[:3])


def test_mixed_resume_is_bit_exact():
    config = EconomyConfig(num_agents=10, max_age=4, max_steps=40)
    learner_config = LearnerConfig(mix="reinforce=0.6,random=0.4", update_every=3)
    whole = make_learner("mixed", config, learner_config)
    economy_whole, _ = _run(whole, config, 14)
    half = make_learner("mixed", config, learner_config)
    economy_half, _ = _run(half, config, 7)
    state, economy_state = copy.deepcopy(half.state_dict()), copy.deepcopy(economy_half.state_dict())
    resumed = make_learner("mixed", config, learner_config)
    resumed.load_state_dict(state)
    economy = Economy(config)
    economy.load_state_dict(economy_state)
    run(resumed, economy, economy.observation, 7)
    assert torch.equal(economy.state.holdings, economy_whole.state.holdings)
    assert torch.equal(resumed.group_of, whole.group_of)
    assert torch.equal(resumed.learners[0].flat_params, whole.learners[0].flat_params)


def test_cultural_inheritance_is_refused():
    with pytest.raises(ValueError, match="cultural"):
        MixedLearner(EconomyConfig(num_agents=4), LearnerConfig(mix="reinforce=0.5,random=0.5",
                                                                inheritance="cultural"))
