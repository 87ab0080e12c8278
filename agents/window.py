"""The rollout window of `agents.reinforce`: preallocated [N, T, ...] buffers filled in place, one step
per `act` (docs/design.md section 5).

Two kinds of tensors live here:
- `buffer`: what resume needs (the prepared inputs, the sampled pre-images and jobs, the rewards, each
  slot's window start). `state_dict(t)` saves only the filled steps `[:, :t]`.
- `activations`: what `act` computed from the buffer (the heads' input and hidden layer, their output,
  the attention and the social filter's relu layer), kept so that learning needs no second forward
  pass. Scratch space: never saved; the learner recomputes it after a load (the same operations on the
  same inputs give the same bits).
"""
from __future__ import annotations

import torch

from agents.networks import DTYPE

RESUMED = ("own", "peers", "peer_blocked", "pre_image", "job", "reward")  # [N, T, ...] saved up to the filled step


class RolloutWindow:
    """Buffers for `steps` (T) steps of N slots, K peer slots, S own features, P peer features, G Gaussian
    pre-images laid out as `head_slices` says, J jobs (`num_jobs`: the logits before the Gaussian means in
    the heads' output, J + L * V in the symbolic mode), `hidden` (4H) units of the heads and, unless
    `attention_hidden` is None (the uniform-attention ablation), A units of the social filter. In the
    symbolic broadcast mode (`message_length` L > 0) the sampled tokens [N, T, L] are kept and saved too; in a
    spatial world (`moves`) the sampled moves [N, T]. Without `keep_relu` the social filter's relu layer is
    not kept (a learner that recomputes it when learning: at 100,000 agents it is 1 GB, and its gradient
    scratch another). Every tensor lives on `device`, the floats in `dtype` (the rewards in float64);
    `state_dict` returns CPU tensors and `load_state_dict` takes tensors on any device."""

    def __init__(self, num_slots: int, steps: int, num_peer_slots: int, self_dim: int, peer_dim: int,
                 head_slices: dict, num_jobs: int, num_resources: int, hidden: int, attention_hidden,
                 message_length: int = 0, moves: bool = False, keep_relu: bool = True, mean_context: bool = False,
                 dtype: torch.dtype = DTYPE, device: torch.device | str = "cpu"):
        n, t, k, s, p, r = num_slots, steps, num_peer_slots, self_dim, peer_dim, num_resources
        self.dtype, self.device = dtype, torch.device(device)
        floats, on = {"dtype": dtype, "device": self.device}, {"device": self.device}
        g = max(stop for _, stop in head_slices.values())
        self.steps = t
        # the pre-images carry one extra column, always 0: the fixed last logit of the trade weights
        padded = torch.zeros(n, t, g + 1, **floats)
        # [N, T, S + P] the heads' input: own features, context (and with `mean_context` the plain mean [P])
        x = torch.zeros(n, t, s + p * (2 if mean_context else 1), **floats)
        self.buffer = {
            "own": x[..., :s],  # [N, T, S] prepared own features
            "peers": torch.zeros(n, t, k, p, **floats),  # [N, T, K, P]
            "peer_blocked": torch.ones(n, t, k, dtype=torch.bool, **on),  # [N, T, K] True where no live peer
            "pre_image": padded[..., :g],  # [N, T, G] sampled u
            "job": torch.zeros(n, t, dtype=torch.int64, **on),  # [N, T]
            "reward": torch.zeros(n, t, dtype=torch.float64, **on),  # [N, T]
        }
        self.resumed = RESUMED
        if message_length:
            self.buffer["tokens"] = torch.zeros(n, t, message_length, dtype=torch.int64, **on)  # [N, T, L]
            self.resumed = RESUMED + ("tokens",)
        self.token_slots = [self.buffer["tokens"][:, i] for i in range(t)] if message_length else []  # [N, L] each
        if moves:
            self.buffer["move"] = torch.zeros(n, t, dtype=torch.int64, **on)  # [N, T]
            self.resumed = self.resumed + ("move",)
        self.move_slots = [self.buffer["move"][:, i] for i in range(t)] if moves else []  # [N] each
        # [N, T, K] the row each peer slot showed (-1: none): not needed to act or learn, but a checkpoint
        # stores the peers as these rows of one [N, P] table per step, K times smaller than [N, K, P]
        self.peer_rows = torch.full((n, t, k), -1, dtype=torch.int32, **on)
        self.window_start = torch.zeros(n, dtype=torch.int64, **on)  # [N] first step that trains the slot's agent
        self.activations = {"x": x, "hidden": torch.zeros(n, t, hidden, **floats),
                            "out": torch.zeros(n, t, num_jobs + g, **floats),
                            "attention": torch.zeros(n, t, k, **floats)}
        if attention_hidden is not None and keep_relu:
            self.activations["relu"] = torch.zeros(n, t, k, attention_hidden, **floats)
            # scratch for the relu layer's gradient (kept: a fresh block per update costs page faults)
            self.activations["relu_grad"] = torch.zeros(n, t, k, attention_hidden, **floats)
        buf, act = self.buffer, self.activations

        def step(tensor, i):  # [N, 1, ...] step i of a window tensor
            return tensor[:, i:i + 1]

        b = head_slices["broadcast"][1]
        # per step, what act writes: own [N, S], its holdings [N, R], peers [N, K, P], their holdings,
        # blocked [N, 1, K], the peers' rows [N, K], pre-image [N, G], job [N], then the pre-images of the
        # broadcast, sigmoid and trade heads
        self.act_slots = [(buf["own"][:, i], buf["own"][:, i, :r], buf["peers"][:, i], buf["peers"][:, i, :, -r:],
                           step(buf["peer_blocked"], i), self.peer_rows[:, i], buf["pre_image"][:, i], buf["job"][:, i],
                           padded[:, i, :b], padded[:, i, b:b + 1 + r], padded[:, i, b + 1 + r:]) for i in range(t)]
        # per step, what the forward pass reads and writes ([N, 1, ...] views)
        self.step_views = [{**{key: step(value, i) for key, value in act.items()}, "own": step(buf["own"], i),
                            "peers": step(buf["peers"], i), "blocked": step(buf["peer_blocked"], i),
                            "context": x[:, i:i + 1, s:s + p],
                            **({"mean_context": x[:, i:i + 1, s + p:]} if mean_context else {})} for i in range(t)]
        self.rewards = [buf["reward"][:, i] for i in range(t)]  # [N] per step
        self._full = self.first(t, cached=False)

    def first(self, t: int, cached: bool = True) -> dict:
        """The first t steps of the buffers and activations ([N, t, ...] views)."""
        if cached and t == self.steps:
            return self._full
        return {key: value[:, :t] for key, value in {**self.buffer, **self.activations}.items()}

    def clear(self) -> None:
        """Start a new window: every slot's steps from 0 on are valid again (the data is overwritten)."""
        self.window_start.zero_()

    def state_dict(self, t: int) -> dict:
        """The filled steps [:, :t] of the buffers (copies, contiguous: saving a view would save its whole
        storage) and the window starts (the live tensor, not a copy: save it before the next update).

        The peers [N, t, K, P] are stored as `peer_rows` [N, t, K] (int32) into `peer_table` [t, N, P]
        (what each row showed at each step) when that rebuilds them to the bit, which it does for
        observations from `Economy` (peers are rows of the public features); otherwise as they are."""
        cpu = torch.device("cpu")  # a checkpoint holds CPU tensors, whatever the device
        state = {"steps": t, "window_start": self.window_start.to(cpu),
                 **{key: self.buffer[key][:, :t].to(cpu, copy=True) for key in self.resumed if key != "peers"}}
        rows, peers = self.peer_rows[:, :t], self.buffer["peers"][:, :t]
        table = torch.zeros(t, peers.shape[0], peers.shape[-1], dtype=self.dtype, device=self.device)
        same = torch.int64 if self.dtype == torch.float64 else torch.int32  # compare the bits
        for i in range(t):  # at most T - 1 steps: a loop over steps, not agents
            shown = rows[:, i].long()  # [N, K]
            live = shown >= 0
            table[i].index_put_((shown[live],), peers[:, i][live])
            if not torch.equal(_rebuild(table[i], shown).view(same), peers[:, i].view(same)):
                state["peers"] = peers.to(cpu, copy=True)
                return state
        state.update(peer_rows=rows.to(cpu, copy=True), peer_table=table.to(cpu))
        return state

    def load_state_dict(self, state: dict) -> int:
        """Copy a `state_dict` into the buffers in place (the per-step views stay valid); returns its t.
        ValueError naming the entry when a shape or dtype differs."""
        t = state.get("steps")
        if type(t) is not int or not 0 <= t < self.steps:
            raise ValueError(f"learner state's window 'steps' is {t!r}, expected an int in [0, {self.steps})")
        peers = self.buffer["peers"][:, :t]
        expected = {key: self.buffer[key][:, :t] for key in self.resumed if key != "peers"}
        expected["window_start"] = self.window_start
        if "peers" in state:
            expected["peers"] = peers
        else:
            expected["peer_rows"] = self.peer_rows[:, :t]
            expected["peer_table"] = torch.empty(t, peers.shape[0], peers.shape[-1], dtype=self.dtype)
        for key, mine in expected.items():
            theirs = state.get(key)
            if not isinstance(theirs, torch.Tensor) or theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                got = (tuple(theirs.shape), theirs.dtype) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
                raise ValueError(f"learner state's window buffer {key!r} is {got}, expected "
                                 f"{(tuple(mine.shape), mine.dtype)}")
        if "peer_rows" in expected and t:
            low, high = int(state["peer_rows"].min()), int(state["peer_rows"].max())
            if low < -1 or high >= peers.shape[0]:
                raise ValueError(f"learner state's window buffer 'peer_rows' holds rows in [{low}, {high}], "
                                 f"expected -1 or [0, {peers.shape[0]})")
        for key, mine in expected.items():
            if key != "peer_table":
                mine.copy_(state[key])
        if "peer_table" in expected:
            for i in range(t):
                peers[:, i].copy_(_rebuild(state["peer_table"][i].to(self.device), self.peer_rows[:, i].long()))
        return t


def _rebuild(table: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """[N, K, P] peers from a table [N, P] of what each row showed and the rows shown [N, K] (-1: none, zeros)."""
    return torch.where((shown >= 0).unsqueeze(-1), table[shown.clamp(min=0)], 0.0)
