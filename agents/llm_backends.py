"""Where the language-model agents' replies come from (docs/design.md section 12).

A backend turns a batch of chat conversations (one per agent acting this step; each a list of
{"role", "content"} messages) into one `Reply` per conversation, in order. It never raises for a
failed request: the reply then has ``text=None`` and an ``error``, and the agent falls back.

- `HTTPChatBackend`: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server,
  Ollama, `homoecon_lab.llm_server`), standard library only. The requests of a step go out at once
  from a thread pool (`concurrency` at a time), each with a timeout; a response body larger than
  `MAX_RESPONSE_BYTES` is not read.
- `TransformersBackend`: a local transformers causal LM (the ``[llm]`` extra), batched generation
  (left padding), greedy at temperature 0. ``model="tiny-random"`` builds the tiny randomly
  initialised model of `agents.llm_tiny` (offline, no download); anything else is a local folder
  holding a model and its tokenizer (``from_pretrained(path, local_files_only=True)``).

Sampling at a temperature > 0 draws from a generator forked off torch's global one and seeded by
(seed, call number), so the economy's and learners' random streams are untouched and a run repeats.
"""
from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional

MAX_RESPONSE_BYTES = 1 << 20  # a response body beyond 1 MiB is cut off and refused
TINY_MODEL = "tiny-random"
INSTALL = "pip install -e '.[llm]'"


@dataclass(frozen=True)
class Reply:
    """One conversation's answer: its text (None when the request failed), token counts and latency."""

    text: Optional[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: Optional[str] = None


def _hide_broken_torchvision() -> None:
    """transformers imports torchvision whenever it is installed, even for text models; a torchvision
    built for another torch (PyPI's, beside the CPU torch 2.13.0 that benchmarl's extra brings it to)
    fails to import with a RuntimeError. Then hide it (a None entry in sys.modules reads as "not
    installed" to importlib.util.find_spec), so the text model loads."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure of a broken build
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None
        utils = sys.modules.get("transformers.utils.import_utils")  # transformers imported already: its
        for check in ("is_torchvision_available", "is_torchvision_v2_available"):  # answers are cached
            cache_clear = getattr(getattr(utils, check, None), "cache_clear", None)
            if cache_clear is not None:
                cache_clear()


def require_transformers():
    """Import transformers, or ValueError with the install command."""
    _hide_broken_torchvision()
    try:
        import transformers
    except ImportError:
        raise ValueError(f"llm_backend 'transformers' needs the transformers package: {INSTALL}") from None
    return transformers


def check_base_url(url: str) -> str:
    """The endpoint's base URL (e.g. ``http://127.0.0.1:8000/v1``) without a trailing slash; ValueError else."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) < 8:
        raise ValueError(f"llm_base_url must be an http:// or https:// URL such as http://127.0.0.1:8000/v1, "
                         f"got {url!r}")
    return url.rstrip("/")


class HTTPChatBackend:
    """POST {base_url}/chat/completions, one request per conversation, `concurrency` at a time."""

    def __init__(self, base_url: str, model: str, max_tokens: int = 96, temperature: float = 0.0,
                 timeout_s: float = 30.0, concurrency: int = 16, seed: int = 0):
        self.url = check_base_url(base_url) + "/chat/completions"
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.timeout_s, self.seed = timeout_s, seed
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm-http")

    def _request(self, messages: list, seed: int) -> Reply:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                           "temperature": self.temperature, "seed": seed}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            return Reply(None, latency_s=time.perf_counter() - start, error=f"HTTP {error.code}")
        except (OSError, ValueError) as error:  # refused, timed out, reset, bad URL
            return Reply(None, latency_s=time.perf_counter() - start, error=f"{type(error).__name__}: {error}")
        latency = time.perf_counter() - start
        if len(raw) > MAX_RESPONSE_BYTES:
            return Reply(None, latency_s=latency, error=f"response body over {MAX_RESPONSE_BYTES} bytes")
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"]
            usage = data.get("usage") or {}
            prompt_tokens, completion_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}")
            counts = [c if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**31 else 0
                      for c in (prompt_tokens, completion_tokens)]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            return Reply(None, latency_s=latency, error=f"not a chat-completions response ({type(error).__name__})")
        return Reply(text, counts[0], counts[1], latency)

    def complete(self, conversations: list, call: int = 0) -> list:
        """One Reply per conversation, in order; the requests run concurrently."""
        futures = [self.pool.submit(self._request, messages, self.seed + call * 100_003 + i)
                   for i, messages in enumerate(conversations)]
        return [future.result() for future in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def chat_text(tokenizer, messages: list) -> str:
    """The conversation as one prompt: the tokenizer's chat template when it has one, else a plain
    ``<|role|>content`` layout ending with ``<|assistant|>``."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"


class TransformersBackend:
    """Batched generation with a local causal LM (module docstring)."""

    def __init__(self, model: str = TINY_MODEL, max_tokens: int = 96, temperature: float = 0.0,
                 batch_size: int = 16, seed: int = 0):
        require_transformers()
        import torch

        from agents import llm_tiny

        if model == TINY_MODEL:
            self.model, self.tokenizer = llm_tiny.build_tiny_model(seed=0)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
                self.model = AutoModelForCausalLM.from_pretrained(model, local_files_only=True)
            except (OSError, ValueError) as error:
                raise ValueError(f"llm_model {model!r}: cannot load a local transformers model and tokenizer "
                                 f"from it ({type(error).__name__}: {str(error)[:200]}); give a folder holding "
                                 f"both, or {TINY_MODEL!r}") from None
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_tokens, self.temperature, self.batch_size, self.seed = max_tokens, temperature, batch_size, seed
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0)
                           or getattr(self.model.config, "n_positions", 0) or 2048)
        self.torch = torch

    def _generate(self, prompts: list, seed: int) -> list:
        torch, tokenizer = self.torch, self.tokenizer
        budget = max(1, self.context - self.max_tokens)  # keep the prompt's end (the question) when too long
        tokenizer.truncation_side = "left"
        batch = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=budget)
        start = time.perf_counter()
        sampling = self.temperature > 0
        options = {"do_sample": True, "temperature": self.temperature} if sampling else {"do_sample": False}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            output = self.model.generate(**batch, max_new_tokens=self.max_tokens,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                         **options)
        latency = time.perf_counter() - start
        new = output[:, batch["input_ids"].shape[1]:]  # [b, <= max_tokens]
        replies = []
        for row, mask in zip(new, batch["attention_mask"]):
            ended = (row == tokenizer.eos_token_id).nonzero()
            length = int(ended[0]) if len(ended) else int(row.numel())
            text = tokenizer.decode(row[:length], skip_special_tokens=True)
            replies.append(Reply(text, int(mask.sum()), length, latency))
        return replies

    def complete(self, conversations: list, call: int = 0) -> list:
        """One Reply per conversation, generated `batch_size` at a time; latency is the batch's."""
        prompts = [chat_text(self.tokenizer, messages) for messages in conversations]
        replies = []
        for start in range(0, len(prompts), self.batch_size):
            replies += self._generate(prompts[start:start + self.batch_size], self.seed + call * 100_003 + start)
        return replies

    def close(self) -> None:
        pass


def make_backend(config) -> "HTTPChatBackend | TransformersBackend":
    """The backend a LearnerConfig asks for (llm_backend, llm_model, llm_base_url, ...)."""
    if config.llm_backend == "http":
        return HTTPChatBackend(config.llm_base_url, config.llm_model, config.llm_max_tokens, config.llm_temperature,
                               config.llm_timeout_s, config.llm_concurrency, config.seed)
    return TransformersBackend(config.llm_model, config.llm_max_tokens, config.llm_temperature,
                               config.llm_concurrency, config.seed)
