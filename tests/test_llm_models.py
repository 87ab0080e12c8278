"""Language-model agents with real inference: the tiny random transformers model (no download) through
the local backend and, over HTTP, through a server process this test starts; a mixed economy trains
with it through train.py (docs/design.md section 12). Needs the [llm] extra."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from extras import import_extra

from agents.config import LearnerConfig
from agents.llm import LLMLearner
from agents.llm_backends import HTTPChatBackend, TransformersBackend
from agents.llm_tiny import build_tokenizer, save_tiny_model
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Economy

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 8
CONFIG = EconomyConfig(num_agents=3, max_age=4, max_steps=20)
CONVERSATIONS = [[{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": text}]
                 for text in ("Holdings: berries 1.000, meat 0.500", "Season: hunting 0.91", "{")]


@pytest.fixture(scope="module", autouse=True)
def needs_transformers():
    """Skip every test here without the [llm] extra (fail in CI, HOMOECON_REQUIRE_EXTRAS=1); runs first."""
    import_extra("transformers", "llm")


@pytest.fixture(scope="module")
def local():
    return TransformersBackend("tiny-random", max_tokens=MAX_TOKENS, batch_size=8)


@pytest.fixture(scope="module")
def server():
    """`python -m homoecon_lab.llm_server` serving the tiny model on a free port, for this module."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "homoecon_lab.llm_server", "--port", "0", "--max-tokens",
                                str(MAX_TOKENS)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=120)
    try:
        assert lines and lines[0].startswith("listening on "), f"server did not start: {lines}"
        yield lines[0].split()[-1]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_tiny_tokenizer_round_trips_any_text():
    tokenizer = build_tokenizer()
    text = 'héllo {"job": "hunting"} ✓\n\x00 IGNORE'
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text and max(ids) < 256  # bytes only, no special token added


def test_batched_generation_equals_one_prompt_at_a_time(local):
    batched = local.complete(CONVERSATIONS)
    alone = [local.complete([conversation])[0] for conversation in CONVERSATIONS]
    assert [reply.text for reply in batched] == [reply.text for reply in alone]
    assert [reply.prompt_tokens for reply in batched] == [reply.prompt_tokens for reply in alone]
    assert len({reply.text for reply in batched}) > 1  # the replies depend on the prompt
    assert all(reply.completion_tokens <= MAX_TOKENS for reply in batched)


def test_a_saved_tiny_model_loads_from_its_folder_and_generates_the_same(tmp_path, local):
    save_tiny_model(str(tmp_path / "tiny"))
    loaded = TransformersBackend(str(tmp_path / "tiny"), max_tokens=MAX_TOKENS)
    assert [r.text for r in loaded.complete(CONVERSATIONS)] == [r.text for r in local.complete(CONVERSATIONS)]
    with pytest.raises(ValueError, match="llm_model"):
        TransformersBackend(str(tmp_path / "missing"))


def test_the_http_backend_returns_what_the_served_model_generates(server, local):
    backend = HTTPChatBackend(server, "tiny-random", max_tokens=MAX_TOKENS, timeout_s=60, concurrency=3)
    over_http = backend.complete(CONVERSATIONS)
    here = local.complete(CONVERSATIONS)
    assert all(reply.error is None for reply in over_http)
    assert [r.text for r in over_http] == [r.text for r in here]
    assert [(r.prompt_tokens, r.completion_tokens) for r in over_http] == \
        [(r.prompt_tokens, r.completion_tokens) for r in here]
    backend.close()


@pytest.mark.parametrize("backend", ["transformers", "http"])
def test_llm_agents_on_the_tiny_model_keep_the_economy_sound(backend, server):
    learner = LLMLearner(CONFIG, LearnerConfig(llm_backend=backend, llm_base_url=server, llm_max_tokens=MAX_TOKENS,
                                               llm_timeout_s=60, llm_peers_shown=2))
    economy = Economy(CONFIG)
    observation = economy.reset(seed=4)
    rates = []
    for _ in range(3):
        out = economy.step(learner.act(observation))
        metrics = learner.update(out)
        learner.on_births(out.births)
        observation = out.observation
        rates.append(metrics["llm/invalid_rate"])
        assert metrics["llm/error_rate"] == 0.0 and metrics["llm/prompt_tokens"] > 100
    assert all(0.0 <= rate <= 1.0 for rate in rates) and rates[0] == 1.0  # gibberish: every reply falls back
    assert bool(torch.isfinite(economy.state.holdings).all()) and bool((economy.state.holdings >= 0).all())
    learner.close()


def test_a_mixed_economy_with_the_tiny_model_trains_and_resumes_through_train_py(tmp_path, server):
    import train

    run = tmp_path / "mixed"
    train.main(["--learner", "mixed", "--mix", "llm=0.1,reinforce=0.9", "--num-agents", "10", "--llm-backend", "http",
                "--llm-base-url", server, "--llm-max-tokens", str(MAX_TOKENS), "--llm-peers-shown", "2",
                "--update-every", "2", "--log-every", "2", "--dashboard-every", "0", "--checkpoint-every", "2",
                "--steps", "4", "--run-dir", str(run)])
    train.main(["--resume", str(run), "--steps", "6"])
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["learner"] == "mixed" and config["learner"]["mix"] == "llm=0.1,reinforce=0.9"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"learner/llm/invalid_rate", "learner/llm/latency_s", "learner/llm/prompt_tokens",
            "learner/reinforce/loss"} <= set(tags)
    invalid = [event.value for event in events.Scalars("learner/llm/invalid_rate")]
    assert invalid and all(0.0 <= value <= 1.0 for value in invalid)
    assert [event.step for event in events.Scalars("reward/mean")][-1] == 6
