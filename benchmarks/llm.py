"""Language-model agents: training steps/s and invalid-reply rate with the tiny random model (issue 18).

    python benchmarks/llm.py                                  # both backends, the default cases, table + JSON
    python benchmarks/llm.py --backends transformers --steps 5 --cases llm=1.0@10

Each case is ``<mix>@<num_agents>``: ``llm=1.0@10`` is ten language-model agents, ``llm=0.1,reinforce=0.9@50``
a mixed population of five of them among 45 REINFORCE agents. A case runs train.py's loop (act, step,
update, births) for --steps steps after one warm-up step, with the tiny randomly initialised model of
agents.llm_tiny: through the local transformers backend (batched generation), and over HTTP against
``python -m homoecon_lab.llm_server`` started here (requests concurrent; the server generates one at a
time). Reported: steps/s, the mean invalid-reply rate (the tiny model writes gibberish, so about 1:
the fallback's cost is what is measured), mean latency per request and tokens per request.
Writes benchmarks/results/llm.json (--out). Needs the [llm] extra.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_server(max_tokens: int):
    """The chat-completions server on a free port: (process, base URL)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "homoecon_lab.llm_server", "--port", "0", "--max-tokens",
                                str(max_tokens)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    line = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=300)
    if not line or not line[0].startswith("listening on "):
        process.kill()
        raise SystemExit(f"llm benchmark: the server did not start ({line})")
    return process, line[0].split()[-1]


def run_case(mix: str, num_agents: int, backend: str, url: str, steps: int, max_tokens: int) -> dict:
    import torch

    from agents import make_learner
    from agents.config import LearnerConfig
    from homoecon_env.config import EconomyConfig
    from homoecon_env.core import Economy

    torch.set_num_threads(1)
    economy_config = EconomyConfig(num_agents=num_agents, max_steps=10**6)
    pure = mix == "llm=1.0"
    learner_config = LearnerConfig(llm_backend=backend, llm_base_url=url, llm_max_tokens=max_tokens,
                                   **({} if pure else {"mix": mix}), update_every=5)
    learner = make_learner("llm" if pure else "mixed", economy_config, learner_config)
    economy = Economy(economy_config)
    observation = economy.reset(seed=1)
    sums, count = {}, 0

    def one_step(observation):
        out = economy.step(learner.act(observation))
        metrics = learner.update(out)
        learner.on_births(out.births)
        return out.observation, metrics

    observation, _ = one_step(observation)  # warm-up: the model's first call
    start = time.perf_counter()
    for _ in range(steps):
        observation, metrics = one_step(observation)
        for key, value in metrics.items():
            if "llm/" in key:
                sums[key.split("llm/")[-1]] = sums.get(key.split("llm/")[-1], 0.0) + value
        count += any("llm/" in key for key in metrics)
    seconds = time.perf_counter() - start
    mean = {key: value / max(count, 1) for key, value in sums.items()}
    return {"mix": mix, "num_agents": num_agents, "backend": backend, "steps": steps,
            "steps_per_sec": steps / seconds, "invalid_rate": mean.get("invalid_rate"),
            "latency_s": mean.get("latency_s"), "prompt_tokens": mean.get("prompt_tokens"),
            "completion_tokens": mean.get("completion_tokens")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["llm=1.0@10", "llm=0.1,reinforce=0.9@50"])
    parser.add_argument("--backends", nargs="+", default=["transformers", "http"], choices=["transformers", "http"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llm.json"))
    args = parser.parse_args(argv)
    server, url = start_server(args.max_tokens) if "http" in args.backends else (None, "http://127.0.0.1:9/v1")
    rows = []
    try:
        for case in args.cases:
            mix, _, agents = case.rpartition("@")
            for backend in args.backends:
                rows.append(run_case(mix, int(agents), backend, url, args.steps, args.max_tokens))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    print("\n| population | agents | backend | steps/s | invalid rate | latency s/request | tokens in / out per "
          "request |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mix']} | {row['num_agents']} | {row['backend']} | {row['steps_per_sec']:.2f} | "
              f"{row['invalid_rate']:.2f} | {row['latency_s']:.3f} | {row['prompt_tokens']:.0f} / "
              f"{row['completion_tokens']:.0f} |")
    from homoecon_env.files import atomic_write_text

    atomic_write_text(args.out, json.dumps({"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                                            "steps": args.steps, "max_tokens": args.max_tokens, "rows": rows},
                                           indent=2) + "\n")


if __name__ == "__main__":
    main()
