"""Inheritance modes of the network learners (docs/design.md section 9): genetic (the default,
unchanged), cultural (a newborn copies a living teacher drawn by wealth) and none (fresh networks)."""
import json
import typing

import numpy as np
import pytest
import torch
from scipy import stats
from test_train import assert_identical, restore_torch_globals  # noqa: F401 (autouse: train() sets torch globals)

import agents.inheritance
from agents import LearnerConfig, make_learner
from agents.checkpoint import load_checkpoint
from agents.inheritance import choose_teachers
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy
from homoecon_lab import training
from homoecon_lab.cli import parse_train_args
from homoecon_lab.rollouts import Task, run_task
from homoecon_lab.settings import Settings, settings_from_json
from homoecon_lab.sweeps import convert

ECONOMY = EconomyConfig(num_agents=12, max_age=4, max_steps=200)  # short lives: births every step or two


def step_until_births(learner, economy, observation, minimum=1, limit=50, skip=0):
    """Act, step and learn until a step after the first ``skip`` has at least ``minimum`` births; returns
    (its StepOutput, the parameters before its on_births). on_births is NOT called for that step."""
    for t in range(limit):
        out = economy.step(learner.act(observation))
        learner.update(out)
        if t >= skip and int(out.births.born.sum()) >= minimum and not out.births.founders:
            return out, learner.flat_params.clone()
        learner.on_births(out.births)
        observation = out.observation
    raise AssertionError("no births within the limit")


def fresh(mode, name="reinforce", **learner):
    learner = make_learner(name, ECONOMY, LearnerConfig(seed=4, inheritance=mode, **learner))
    economy = Economy(ECONOMY)
    return learner, economy, economy.reset(seed=2)


@pytest.mark.parametrize("name", ["reinforce", "ppo", "uniform_attention"])
def test_cultural_newborns_are_exact_copies_of_a_living_teachers_networks(name):
    learner, economy, observation = fresh("cultural", name, update_every=2)
    out, before = step_until_births(learner, economy, observation, minimum=2, skip=6)
    learner.on_births(out.births)
    born = out.births.born
    teachers = learner.last_teachers
    assert (teachers[born] >= 0).all() and (teachers[~born] == -1).all()
    assert not born[teachers[born]].any(), "a teacher must be a living agent, not another newborn"
    for row in born.nonzero().view(-1).tolist():
        assert torch.equal(learner.flat_params[row], before[int(teachers[row])]), f"slot {row} is not its teacher"
    assert torch.equal(learner.flat_params[~born], before[~born]), "only newborn rows change"
    assert (learner.baseline[born] == 0).all() and (learner.baseline_updates[born] == 0).all()
    # a newborn's Adam state starts afresh even though its teacher's does not
    state = learner.optimizer.state_dict()
    assert (state["steps"][born] == 0).all() and (state["steps"][~born] > 0).any()
    for tensor in state["exp_avg"] + state["exp_avg_sq"]:
        assert (tensor[born] == 0).all()


def test_with_inherit_optimizer_a_cultural_newborn_takes_its_teachers_adam_state():
    learner, economy, observation = fresh("cultural", update_every=2, inherit_optimizer=True)
    out, _ = step_until_births(learner, economy, observation, minimum=2, skip=6)
    before = {key: [t.clone() for t in value] if isinstance(value, list) else value.clone()
              for key, value in learner.optimizer.state_dict().items()}
    learner.on_births(out.births)
    born = out.births.born.nonzero().view(-1)
    teachers = learner.last_teachers[born]
    after = learner.optimizer.state_dict()
    assert (before["steps"][teachers] > 0).all(), "teachers have learned: their state is not the fresh one"
    assert torch.equal(after["steps"][born], before["steps"][teachers])
    for old, new in zip(before["exp_avg"] + before["exp_avg_sq"], after["exp_avg"] + after["exp_avg_sq"]):
        assert torch.equal(new[born], old[teachers])


def test_teachers_are_drawn_in_proportion_to_shifted_wealth_and_only_among_the_eligible():
    wealth = torch.tensor([5.0, 1.0, 2.0, 4.0, 100.0, 1.0], dtype=torch.float64)
    eligible = torch.tensor([True, True, True, True, False, True])
    draws = choose_teachers(wealth, eligible, 60_000, torch.Generator().manual_seed(0))
    counts = np.bincount(draws.numpy(), minlength=6)
    assert counts[4] == 0, "an ineligible slot (a newborn) is never a teacher"
    # by hand: weights wealth - min(eligible) + 1e-6 = 4, 0, 1, 3, -, 0 (plus 1e-6 each) -> 4/8, 0, 1/8, 3/8, 0
    expected = np.array([4, 1e-6, 1, 3, 0, 1e-6]) / (8 + 2e-6)
    observed = counts[[0, 2, 3]]
    assert stats.chisquare(observed, expected[[0, 2, 3]] * observed.sum() / expected[[0, 2, 3]].sum()).pvalue > 1e-3
    assert counts[1] + counts[5] <= 2
    # equal wealth: a uniform draw over the eligible
    flat = choose_teachers(torch.ones(6, dtype=torch.float64), eligible, 50_000, torch.Generator().manual_seed(1))
    share = np.bincount(flat.numpy(), minlength=6)[[0, 1, 2, 3, 5]] / 50_000
    assert np.allclose(share, 0.2, atol=0.01)
    with pytest.raises(ValueError, match="no eligible teacher"):
        choose_teachers(wealth, torch.zeros(6, dtype=torch.bool), 1, torch.Generator())


def test_cultural_teachers_follow_the_wealth_the_learner_observed():
    """Through the learner: with one agent far richer than the rest, nearly every pupil copies it."""
    learner, economy, observation = fresh("cultural")
    out, before = step_until_births(learner, economy, observation)
    learner._wealth = torch.ones(ECONOMY.num_agents, dtype=torch.float64)  # what act saw, replaced by a test case
    rich = int((~out.births.born).nonzero()[0])
    learner._wealth[rich] = 1e9
    learner.on_births(out.births)
    born = out.births.born
    assert (learner.last_teachers[born] == rich).all()
    assert torch.equal(learner.flat_params[born], before[rich].expand(int(born.sum()), -1))


def test_no_inheritance_gives_newborns_networks_from_the_initial_distribution():
    learner, economy, observation = fresh("none")
    born_rows = []
    for _ in range(40):  # collect newborn rows until there are enough entries to test the distribution
        out, before = step_until_births(learner, economy, observation)
        learner.on_births(out.births)
        born = out.births.born
        assert torch.equal(learner.flat_params[~born], before[~born])
        born_rows.append(learner.flat_params[born].clone())
        observation = out.observation
    rows = torch.cat(born_rows)  # [C, D]
    # the declared initialisation, parameter by parameter: U(-bound, bound) or a constant
    uniform_scaled = []
    for name, (start, stop, _) in learner.layout.entries.items():
        network, param = name.split(".", 1)
        kind, value = learner.spec[network][param].init
        block = rows[:, start:stop].double()
        if kind == "constant":
            assert (block == value).all(), name
        else:
            assert (block.abs() <= value).all(), name
            uniform_scaled.append((block / value).flatten())
    scaled = torch.cat(uniform_scaled).numpy()
    assert stats.kstest(scaled[:: max(1, scaled.size // 20_000)], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    # and nothing of the parents is left: a newborn row is uncorrelated with every other row of the step
    last = born_rows[-1][0].double()
    others = before.double()
    correlation = [float(np.corrcoef(last.numpy(), other.numpy())[0, 1]) for other in others]
    assert max(abs(c) for c in correlation) < 0.2


@pytest.mark.parametrize("small_births", [None, 0])
def test_genetic_inheritance_is_the_default_crossover_per_network_plus_mutation(small_births, monkeypatch):
    """``small_births`` 0: every birth takes the path of large populations (copies per network range into
    kept scratch rows) instead of whole-block operations; both must follow the rule exactly."""
    if small_births is not None:
        monkeypatch.setattr(agents.inheritance, "SMALL_BIRTHS", small_births)
    assert LearnerConfig().inheritance == "genetic"
    learner, economy, observation = fresh("genetic")
    out, before = step_until_births(learner, economy, observation)
    generator = torch.Generator()
    generator.set_state(learner.generator.get_state())
    learner.on_births(out.births)
    rows = out.births.born.nonzero().view(-1)
    parents = out.births.parent_slots[rows]
    # the documented rule, written out: one fair coin per network (take parent 2 where it rounds to 1),
    # the whole network copied from that parent, then N(0, param_mutation^2) on every entry
    coins = torch.rand(rows.numel(), len(learner.spec), generator=generator).round()
    expected = before[parents[:, 0]].clone()
    for k in range(len(learner.spec)):
        columns = learner.layout.column_network == k
        take_second = coins[:, k] == 1
        expected[take_second.nonzero().view(-1)[:, None], columns.nonzero().view(-1)] = \
            before[parents[take_second, 1]][:, columns]
    expected = torch.normal(expected, learner.config.param_mutation, generator=generator)
    assert torch.equal(learner.flat_params[rows], expected)
    assert learner.last_teachers is None


def test_inheritance_is_a_flag_kept_in_config_json_and_older_configs_mean_genetic(tmp_path):
    settings = parse_train_args(["--inheritance", "cultural", "--steps", "3", "--run-dir", str(tmp_path / "r")])
    assert settings.learner.inheritance == "cultural"
    saved = json.loads(json.dumps(settings.to_json()))
    assert saved["learner"]["inheritance"] == "cultural"
    assert settings_from_json(saved) == settings
    del saved["learner"]["inheritance"]  # a config.json written before the flag existed
    assert isinstance(settings_from_json(saved), Settings)
    assert settings_from_json(saved).learner.inheritance == "genetic"
    with pytest.raises(ValueError, match="inheritance"):
        LearnerConfig(inheritance="lamarckian")
    # sweep.py can sweep it: --grid inheritance=genetic,cultural,none
    hint = typing.get_type_hints(LearnerConfig)["inheritance"]
    assert [convert("inheritance", mode, hint) for mode in ("genetic", "cultural", "none")] == \
        ["genetic", "cultural", "none"]
    with pytest.raises(ValueError, match="inheritance expects one of genetic, cultural, none"):
        convert("inheritance", "lamarckian", hint)


@pytest.mark.parametrize("name", ["scripted", "random"])
def test_learners_without_networks_ignore_the_inheritance_mode(name):
    learner = make_learner(name, ECONOMY, LearnerConfig(inheritance="cultural"))
    economy = Economy(ECONOMY)
    observation = economy.reset(seed=0)
    for _ in range(10):
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation


def test_a_cultural_rollout_records_each_pupils_teacher_alive_at_its_birth():
    task = Task(key=("main", 0), economy=ECONOMY.replace(max_steps=30), learner="reinforce",
                learner_config=LearnerConfig(seed=1, inheritance="cultural"), economy_seed=3, steps=30, learn=True,
                detail=True)
    agents = run_task(task, lambda k: None)["agents"]
    pupils = {a: r for a, r in agents.items() if r["parents"]}
    assert pupils and all(r["teacher"] is not None for r in pupils.values())
    for record in pupils.values():
        teacher = agents[record["teacher"]]
        assert teacher["birth_step"] < record["birth_step"]
        assert teacher["death_step"] is None or teacher["death_step"] > record["birth_step"]


def test_a_cultural_run_resumes_bit_exactly_and_keeps_its_mode(tmp_path):
    """32 steps at once == 17 steps, then --resume to 32 (which reads the mode from config.json)."""
    tiny = ["--num-agents", "8", "--max-age", "5", "--max-steps", "25", "--log-every", "5", "--seed", "3",
            "--inheritance", "cultural", "--checkpoint-every", "1000", "--dashboard-every", "0"]
    whole, half = tmp_path / "whole", tmp_path / "half"
    training.train(parse_train_args(["--steps", "32", "--run-dir", str(whole), *tiny]))
    training.train(parse_train_args(["--steps", "17", "--run-dir", str(half), *tiny]))
    resumed = parse_train_args(["--resume", str(half), "--steps", "32"])
    assert resumed.learner.inheritance == "cultural"
    training.train(resumed)
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(half / "checkpoint.pt")
    for key in ("learner", "economy", "rng"):
        assert_identical(a[key], b[key], key)
