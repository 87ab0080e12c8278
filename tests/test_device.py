"""Learners on a device and in float64 (LearnerConfig.device, LearnerConfig.dtype; docs/design.md section 5).

There is no GPU in CI: the device code runs on the CPU path everywhere (every transfer is an unconditional
`.to(device)`, a no-op there), and one test compares a CUDA learner with a CPU one where a GPU exists.
"""
import copy
import dataclasses
import io
import json

import pytest
import torch
from test_checkpoint import tensors
from test_learners import with_resources

from agents import LearnerConfig, make_learner
from agents.optim import BatchedAdam
from homoecon_env.core import Economy

pytestmark = pytest.mark.usefixtures("one_thread")

# 12 agents who die of age within a few windows: births (crossover, mutation, fresh optimizer rows) happen
CONFIG = with_resources(3, num_agents=12, num_peers=4, max_steps=60, max_age=6)
NETWORK_LEARNERS = ("reinforce", "uniform_attention", "ppo")


def action_rows(actions) -> torch.Tensor:
    """Every action of every slot as one float64 [N, W] tensor (integers as floats)."""
    parts = [actions.broadcast, actions.job[:, None], actions.effort[:, None], actions.trade_weights, actions.consume]
    parts += [] if actions.move is None else [actions.move[:, None]]
    return torch.cat([part.double().reshape(part.shape[0], -1) for part in parts], dim=1)


def lockstep(learners, steps: int, economy_seed: int = 3, config=CONFIG):
    """Drive several learners on one economy: the first learner's actions step it, every learner acts on the
    same observations and learns from the same step outputs and births. Returns each learner's actions
    [steps, N, W] and the number of births seen."""
    economy = Economy(config)
    observation = economy.reset(economy_seed)
    taken, births = [[] for _ in learners], 0
    for _ in range(steps):
        actions = [learner.act(observation) for learner in learners]
        for record, action in zip(taken, actions):
            record.append(action_rows(action))
        out = economy.step(actions[0])
        for learner in learners:
            learner.update(out)
            learner.on_births(out.births)
        births += int(out.births.born.sum())
        observation = out.observation
    return [torch.stack(record) for record in taken], births


def build(name: str, config=CONFIG, **options):
    return make_learner(name, config, LearnerConfig(seed=5, update_every=4, **options))


@pytest.mark.parametrize("name", NETWORK_LEARNERS)
def test_an_explicit_cpu_device_gives_the_default_learners_trajectory_bit_for_bit(name):
    default, explicit = build(name), build(name, device="cpu", dtype="float32")
    (first, second), births = lockstep([default, explicit], 14)
    assert births > 0  # the birth path ran too
    assert torch.equal(first, second)
    assert torch.equal(default.flat_params, explicit.flat_params)
    assert default.flat_params.dtype == torch.float32 and default.flat_params.device.type == "cpu"


@pytest.mark.parametrize("name, world", [("reinforce", "one market"), ("ppo", "one market"), ("reinforce", "symbolic"),
                                         ("reinforce", "spatial"), ("uniform_attention", "spatial")])
def test_actions_packed_into_one_tensor_to_cross_back_are_the_unpacked_actions_bit_for_bit(name, world):
    """On a GPU the actions cross back to the CPU as one [N, W] tensor, the integer job, move and tokens as
    floats (`pack_actions`, off on the CPU where nothing crosses). Forced on here: every action and every
    learned weight equals the unpacked learner's, in the symbolic mode (tokens) and a spatial world (moves)."""
    config = {"one market": CONFIG, "symbolic": dataclasses.replace(CONFIG, broadcast_mode="symbolic"),
              "spatial": dataclasses.replace(CONFIG, world_width=2, world_height=2)}[world]
    plain, packed = build(name, config), build(name, config)
    packed.pack_actions = True
    assert plain.pack_actions is None
    (first, second), births = lockstep([plain, packed], 10, config=config)
    assert births > 0 and torch.equal(first, second)
    assert torch.equal(plain.flat_params, packed.flat_params)
    actions = packed.act(Economy(config).reset(0))
    assert actions.job.dtype == torch.int64 and (actions.move is None) == (world != "spatial")
    assert actions.broadcast.dtype == (torch.int64 if world == "symbolic" else torch.float32)


@pytest.mark.parametrize("name", NETWORK_LEARNERS)
def test_a_float64_learner_keeps_every_learned_tensor_in_float64(name):
    learner = build(name, dtype="float64")
    lockstep([learner], 9)
    assert learner.flat_params.dtype == torch.float64
    assert all(m.dtype == torch.float64 for m in learner.optimizer.exp_avg + learner.optimizer.exp_avg_sq)
    floats = [value for value in {**learner.window.buffer, **learner.window.activations}.values()
              if value.is_floating_point()]
    assert floats and all(value.dtype == torch.float64 for value in floats)
    # and it learns something else than float32 from the same draws' seed (the dtype is not ignored)
    assert not torch.equal(learner.flat_params.float(), build(name).flat_params)


@pytest.mark.parametrize("name", ["reinforce", "ppo"])
def test_the_optimizer_a_gpu_uses_learns_what_the_cpu_kernel_learns_within_rounding_in_float64(name):
    """On a GPU, BatchedAdam steps in passes over the stacked tensors, not torch's fused CPU kernel per row;
    everything else a CUDA learner runs is this same code with its `.to(device)` transfers. In float64 the two
    learners, driven in lockstep through births, agree to rounding: the actions every step and the weights."""
    cpu_kernel, passes = build(name, dtype="float64"), build(name, dtype="float64")
    config = passes.config
    passes.optimizer = BatchedAdam([passes.flat_params], lr=config.learning_rate,
                                   betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps, fused=False)
    assert not passes.optimizer._fused  # (cpu_kernel's is fused where this torch has the CPU kernel)
    (first, second), births = lockstep([cpu_kernel, passes], 14)
    assert births > 0
    torch.testing.assert_close(second, first, atol=1e-10, rtol=0)
    torch.testing.assert_close(passes.flat_params, cpu_kernel.flat_params, atol=1e-10, rtol=0)
    torch.testing.assert_close(passes.optimizer.steps, cpu_kernel.optimizer.steps, atol=0, rtol=0)
    assert not torch.equal(cpu_kernel.flat_params, build(name, dtype="float64").flat_params)  # it learnt


def saved_and_loaded(state: dict) -> dict:
    """A learner state through a checkpoint's round trip: torch.save, then torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", NETWORK_LEARNERS)
def test_a_float64_checkpoint_taken_mid_window_resumes_bit_exactly(name):
    """Train 6 steps (a window and a half), checkpoint, then go on 8 more steps; a fresh float64 learner that
    loads the checkpoint takes the same actions and ends with the same weights, to the bit."""
    economy = Economy(CONFIG)
    observation = economy.reset(3)
    learner = build(name, dtype="float64")
    for _ in range(6):
        out = economy.step(learner.act(observation))
        learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
    state = saved_and_loaded(learner.state_dict())
    held = list(tensors(state))
    assert held and all(value.device.type == "cpu" for value in held)  # a checkpoint holds CPU tensors
    resumed = build(name, dtype="float64")
    resumed.load_state_dict(state)
    economy_copy = copy.deepcopy(economy)
    for _ in range(8):
        actions, again = learner.act(observation), resumed.act(observation)
        assert torch.equal(action_rows(actions), action_rows(again))
        out, _ = economy.step(actions), economy_copy.step(again)
        for each in (learner, resumed):
            each.update(out)
            each.on_births(out.births)
        observation = out.observation
    assert torch.equal(learner.flat_params, resumed.flat_params)
    assert learner.flat_params.dtype == torch.float64


def test_a_float32_checkpoint_is_refused_by_a_float64_learner_naming_the_dtype():
    state = build("reinforce").state_dict()
    with pytest.raises(ValueError, match="float32 parameters.*dtype is float64.*--learner-dtype"):
        build("reinforce", dtype="float64").load_state_dict(state)


@pytest.mark.parametrize("field, value", [("device", "gpu"), ("device", "cuda:x"), ("device", "CPU"),
                                          ("device", "cuda:-1"), ("device", 0), ("dtype", "float16"),
                                          ("dtype", "double"), ("dtype", torch.float64)])
def test_a_bad_device_or_dtype_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        LearnerConfig(**{field: value})


@pytest.mark.parametrize("name", NETWORK_LEARNERS + ("mixed",))
def test_cuda_without_a_gpu_is_refused_naming_device(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = LearnerConfig(device="cuda", mix="reinforce=0.5,random=0.5")  # the form is fine: a run may move
    with pytest.raises(ValueError, match="^device 'cuda': torch.cuda.is_available\\(\\) is False"):
        make_learner(name, CONFIG, config)


def test_a_cuda_index_past_the_devices_is_refused_naming_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="^device 'cuda:1': this machine has 1 CUDA device"):
        make_learner("reinforce", CONFIG, LearnerConfig(device="cuda:1"))


@pytest.mark.parametrize("name", ["random", "scripted"])
def test_learners_without_networks_run_on_the_cpu_whatever_the_device(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    learner = make_learner(name, CONFIG, LearnerConfig(device="cuda", dtype="float64"))
    economy = Economy(CONFIG)
    actions = learner.act(economy.reset(0))
    assert actions.effort.device.type == "cpu"


def test_a_run_trained_on_a_gpu_evaluates_on_the_cpu_with_device_cpu_and_is_refused_without(tmp_path, monkeypatch,
                                                                                           capsys):
    """A GPU run's config.json says device cuda; on a machine without one, evaluate.py --run refuses it naming
    --device (one parser line, no traceback), and --device cpu evaluates it there (its checkpoint holds CPU
    tensors). train.py --resume refuses it naming --device too."""
    from homoecon_lab.cli import parse_eval_args, parse_train_args
    from homoecon_lab.evaluation import load_source
    from homoecon_lab.training import train

    run_dir = tmp_path / "run"
    train(parse_train_args(["--steps", "6", "--run-dir", str(run_dir), "--num-agents", "8", "--dashboard-every",
                            "0", "--learner-dtype", "float64"]))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["learner"]["device"] == "cpu" and config["learner"]["dtype"] == "float64"
    config["learner"]["device"] = "cuda"
    (run_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for parse, argv in ((parse_eval_args, ["--run", str(run_dir)]),
                        (parse_train_args, ["--resume", str(run_dir), "--steps", "8"])):
        with pytest.raises(SystemExit) as stopped:
            parse(argv)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and "error: argument --device: " in err and "is_available() is False" in err
        assert "Traceback" not in err
    args = parse_eval_args(["--run", str(run_dir), "--device", "cpu"])
    source = load_source(args)
    assert source.learner_config.device == "cpu" and source.learner_config.dtype == "float64"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the only test that may skip)")
def test_a_cuda_float64_learner_equals_the_cpu_learner_within_rounding():
    """reinforce, uniform_attention and ppo, each the same float64 learner on the CPU and on CUDA, in lockstep
    on one economy through births: the draws are made on the CPU for both, so the actions every step and the
    weights agree to rounding; the CUDA learner's checkpoint holds CPU tensors and loads on the CPU, and the
    CPU learner's loads on CUDA. (One test, not parametrized: one skip id where there is no GPU.)"""
    for name in NETWORK_LEARNERS:
        cpu, cuda = build(name, dtype="float64"), build(name, dtype="float64", device="cuda")
        assert cuda.flat_params.device.type == "cuda" and cuda.optimizer.exp_avg[0].device.type == "cuda"
        (first, second), births = lockstep([cpu, cuda], 14)
        assert births > 0
        torch.testing.assert_close(second, first, atol=1e-9, rtol=0)
        torch.testing.assert_close(cuda.flat_params.cpu(), cpu.flat_params, atol=1e-9, rtol=0)
        state = cuda.state_dict()
        assert all(value.device.type == "cpu" for value in tensors(state))
        moved = build(name, dtype="float64")  # a CUDA checkpoint loads on the CPU
        moved.load_state_dict(saved_and_loaded(state))
        assert torch.equal(moved.flat_params, cuda.flat_params.cpu())
        back = build(name, dtype="float64", device="cuda")  # and a CPU one on CUDA
        back.load_state_dict(saved_and_loaded(cpu.state_dict()))
        assert torch.equal(back.flat_params.cpu(), cpu.flat_params)
