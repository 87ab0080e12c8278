"""A small OpenAI-compatible chat-completions server for a local transformers model (docs/design.md section 12).

For tests and examples without vLLM, llama.cpp or Ollama: it serves `TransformersBackend`'s model over
the same protocol, standard library only (http.server):

    python -m homoecon_lab.llm_server --model tiny-random --port 8000
    python train.py --learner llm --llm-backend http --llm-base-url http://127.0.0.1:8000/v1 --llm-model tiny-random

Endpoints: ``POST /v1/chat/completions`` (body: {"model", "messages": [{"role", "content"}, ...],
"max_tokens", "temperature"}; answer: {"choices": [{"message": {"role": "assistant", "content"}}],
"usage": {...}}) and ``GET /v1/models``. Requests are batched as vLLM does: one worker thread runs the
model; every request waiting when it starts a batch (up to ``--batch-size``, same max_tokens and
temperature) is generated in that one batched call (greedy replies do not depend on their batch,
tested). A body over 1 MiB or a malformed one gets a 400. On start it prints one line
``listening on http://HOST:PORT/v1`` (``--port 0`` picks a free port), then serves until SIGTERM or Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agents.llm_backends import Reply

MAX_BODY_BYTES = 1 << 20


class Batcher:
    """One thread runs the model; requests queue up and go in batches (module docstring)."""

    def __init__(self, backend, batch_size: int):
        self.backend, self.batch_size = backend, batch_size
        self.default_max_tokens = backend.max_tokens  # for requests without max_tokens
        self.waiting: queue.Queue = queue.Queue()
        threading.Thread(target=self._work, daemon=True, name="llm-batcher").start()

    def submit(self, conversation: list, max_tokens: int, temperature: float, seed: int):
        done, box = threading.Event(), []
        self.waiting.put((conversation, (max_tokens, temperature), seed, done, box))
        done.wait()
        return box[0]

    def _work(self) -> None:
        held = None
        while True:
            first = held or self.waiting.get()
            held, batch = None, [first]
            while len(batch) < self.batch_size:
                try:
                    item = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if item[1] != first[1]:  # other generation settings: the next batch
                    held = item
                    break
                batch.append(item)
            backend = self.backend
            backend.max_tokens, backend.temperature = first[1]
            backend.seed = first[2]
            try:
                replies = backend.complete([item[0] for item in batch])
            except Exception as error:  # noqa: BLE001 - the clients get an empty reply, the server lives on
                replies = [Reply(None, error=f"{type(error).__name__}: {error}")] * len(batch)
            for item, reply in zip(batch, replies):
                item[4].append(reply)
                item[3].set()


def make_handler(batcher: "Batcher", model_name: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: one line per request would flood a test's output
            pass

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY_BYTES:
                self.close_connection = True
                self._error(400, f"Content-Length must be in 1..{MAX_BODY_BYTES}")
                return
            try:
                request = json.loads(self.rfile.read(length))
                messages = request["messages"]
                if not isinstance(messages, list) or not messages or not all(
                        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                        for m in messages):
                    raise ValueError("messages must be a non-empty list of {role, content} strings")
                max_tokens = request.get("max_tokens") or batcher.default_max_tokens
                if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 < max_tokens <= 4096:
                    raise ValueError("max_tokens must be an int in 1..4096")
                temperature = request.get("temperature", 0.0) or 0.0
                if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                        or not 0 <= temperature <= 10:
                    raise ValueError("temperature must be a number in [0, 10]")
                seed = request.get("seed", 0)
                seed = seed if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63 else 0
            except (ValueError, KeyError, TypeError) as error:
                self._error(400, f"bad request: {error}")
                return
            conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
            reply = batcher.submit(conversation, max_tokens, float(temperature), seed)
            if reply.text is None:
                self._error(500, f"generation failed: {reply.error}")
                return
            self._send(200, {
                "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": "length" if reply.completion_tokens >= max_tokens else "stop"}],
                "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                          "total_tokens": reply.prompt_tokens + reply.completion_tokens}})

    return Handler


def serve(model: str = "tiny-random", host: str = "127.0.0.1", port: int = 8000, max_tokens: int = 96,
          batch_size: int = 16, threads: int = 1) -> None:
    """Serve ``model`` (see agents.llm_backends.TransformersBackend) until SIGTERM/SIGINT, with ``threads``
    torch threads (1 by default: beside a training process on a few cores, more threads only contend)."""
    import torch

    from agents.llm_backends import TransformersBackend

    torch.set_num_threads(threads)

    backend = TransformersBackend(model, max_tokens=max_tokens, batch_size=batch_size)
    server = ThreadingHTTPServer((host, port), make_handler(Batcher(backend, batch_size), model))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    print(f"listening on http://{host}:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m homoecon_lab.llm_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-random", help="tiny-random, or a local transformers model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one, printed on start)")
    parser.add_argument("--max-tokens", type=int, default=96, help="default most tokens per reply")
    parser.add_argument("--batch-size", type=int, default=16, help="most requests generated in one batch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the model")
    args = parser.parse_args(argv)
    try:
        serve(args.model, args.host, args.port, args.max_tokens, args.batch_size, args.threads)
    except (ValueError, OSError) as error:
        sys.exit(f"llm_server: error: {error}")


if __name__ == "__main__":
    main()
