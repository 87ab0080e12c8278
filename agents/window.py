"""The rollout window of `agents.reinforce`: preallocated [N, T, ...] buffers filled in place, one step
per `act` (docs/design.md section 5).

Two kinds of tensors live here:
- `buffer`: what resume needs (the prepared inputs, the sampled pre-images and jobs, the rewards, each
  slot's window start). `state_dict(t)` saves only the filled steps `[:, :t]`.
- `activations`: what `act` computed from the buffer (the heads' input and hidden layer, their output,
  the attention and the social filter's relu layer), kept so that learning needs no second forward
  pass. Scratch space: never saved; the learner recomputes it after a load (the same operations on the
  same inputs give the same bits).

The peers [N, T, K, P] are the window's largest input (0.77 GB at 100,000 agents, K = 32, float32). With
`peer_table` the window keeps them as what they are in an `Economy` observation: per step the row each
peer slot showed ([N, K], `peer_rows`, kept anyway) and one table [N, P] of what each row showed, K times
smaller; the step's peers live in one [N, K, P] scratch while it is acted on, and a learner rebuilds a
block of agents' peers when it learns (`block_peers`: a gather, so the same values, to the bit). A lazy
observation says where its peers come from (`Observation.peer_source`: the public table and the rows): the
step's table is then that table (`keep_source_peers`, no [N, K, P] peers gathered, nothing to check). Other
observations' steps are checked when kept: where the table does not give back every peer's bits (peers that
are not rows of one table, or a masked peer shown as -0.0), that step keeps its [N, K, P] peers as they are.
"""
from __future__ import annotations

import torch

from agents.networks import DTYPE

RESUMED = ("own", "peers", "peer_blocked", "pre_image", "job", "reward")  # [N, T, ...] saved up to the filled step
_CHECK_ROWS = 32768  # slots compared at a time when a step's table is checked (a temporary of 50 MB at K = 32)


class RolloutWindow:
    """Buffers for `steps` (T) steps of N slots, K peer slots, S own features, P peer features, G Gaussian
    pre-images laid out as `head_slices` says, J jobs (`num_jobs`: the logits before the Gaussian means in
    the heads' output, J + L * V in the symbolic mode), `hidden` (4H) units of the heads and, unless
    `attention_hidden` is None (the uniform-attention ablation), A units of the social filter. In the
    symbolic broadcast mode (`message_length` L > 0) the sampled tokens [N, T, L] are kept and saved too; in a
    spatial world (`moves`) the sampled moves [N, T]. Without `keep_relu` the social filter's relu layer is
    not kept (a learner that recomputes it when learning: at 100,000 agents it is 1 GB, and its gradient
    scratch another); without `keep_hidden` neither is the heads' hidden layer. With `peer_table` the peers
    are kept as rows of one table per step (module docstring): `first` then holds no "peers", and
    `block_peers` gives a block of slots' peers. Every tensor lives on `device`, the floats in `dtype` (the
    rewards in float64); `state_dict` returns CPU tensors and `load_state_dict` takes tensors on any device."""

    def __init__(self, num_slots: int, steps: int, num_peer_slots: int, self_dim: int, peer_dim: int,
                 head_slices: dict, num_jobs: int, num_resources: int, hidden: int, attention_hidden,
                 message_length: int = 0, moves: bool = False, keep_relu: bool = True, mean_context: bool = False,
                 peer_table: bool = False, keep_hidden: bool = True, dtype: torch.dtype = DTYPE,
                 device: torch.device | str = "cpu"):
        n, t, k, s, p, r = num_slots, steps, num_peer_slots, self_dim, peer_dim, num_resources
        self.dtype, self.device = dtype, torch.device(device)
        floats, on = {"dtype": dtype, "device": self.device}, {"device": self.device}
        g = max(stop for _, stop in head_slices.values())
        self.steps, self.num_slots, self.num_peer_slots, self.peer_dim, self.num_resources = t, n, k, p, r
        # the pre-images carry one extra column, always 0: the fixed last logit of the trade weights
        padded = torch.zeros(n, t, g + 1, **floats)
        # [N, T, S + P] the heads' input: own features, context (and with `mean_context` the plain mean [P])
        x = torch.zeros(n, t, s + p * (2 if mean_context else 1), **floats)
        self.buffer = {
            "own": x[..., :s],  # [N, T, S] prepared own features
            **({} if peer_table else {"peers": torch.zeros(n, t, k, p, **floats)}),  # [N, T, K, P]
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
        self.peer_table = peer_table
        if peer_table:
            # [T, N + 1, P] what each row showed at each step; row N stays zero (the empty slots' row)
            self.tables = torch.zeros(t, n + 1, p, **floats)
            self.dense: list = [None] * t  # [N, K, P] a step's peers where the table does not rebuild them (kept)
            self.is_dense = [False] * t  # whether step i's peers are in `dense` now
            self.step_peers = torch.zeros(n, 1, k, p, **floats)  # [N, 1, K, P] the step being acted on
            self._extra = None  # `_scratch` beyond step_peers' storage
            peer_slots = [self.step_peers[:, 0]] * t
        else:
            peer_slots = [self.buffer["peers"][:, i] for i in range(t)]
        self.window_start = torch.zeros(n, dtype=torch.int64, **on)  # [N] first step that trains the slot's agent
        self.activations = {"x": x, "out": torch.zeros(n, t, num_jobs + g, **floats),
                            "attention": torch.zeros(n, t, k, **floats)}
        if keep_hidden:
            self.activations["hidden"] = torch.zeros(n, t, hidden, **floats)
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
        self.act_slots = [(buf["own"][:, i], buf["own"][:, i, :r], peer_slots[i], peer_slots[i][:, :, -r:],
                           step(buf["peer_blocked"], i), self.peer_rows[:, i], buf["pre_image"][:, i], buf["job"][:, i],
                           padded[:, i, :b], padded[:, i, b:b + 1 + r], padded[:, i, b + 1 + r:]) for i in range(t)]
        # per step, what the forward pass reads and writes ([N, 1, ...] views)
        self.step_views = [{**{key: step(value, i) for key, value in act.items()}, "own": step(buf["own"], i),
                            "peers": self.step_peers if peer_table else step(buf["peers"], i),
                            "blocked": step(buf["peer_blocked"], i),
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

    # -- the peers as rows of one table per step (`peer_table`) ---------------------------------------
    def keep_source_peers(self, i: int, source) -> bool:
        """Act on and keep step i's peers straight from where an observation's come from (`source`, its
        `Observation.peer_source`, or None): the step's table becomes the public table as the learner reads
        peers (in the window's dtype, the holdings, the last R columns, as log1p(max(0, h))) with the empty
        row N, `peer_rows[:, i]` the rows shown (N where not live), and `step_peers` those rows of the table,
        the values `act` makes of the gathered peers, to the bit, without gathering them. Returns False, writing
        nothing, without `peer_table` or a source, when the source's table is not [N, P] or its rows not
        [N, K], or when a slot that is not live shows a row with a negative or non-finite value (its gathered
        peer, that row times 0, is then -0.0 or NaN there, which the empty row does not give): the caller
        then keeps the gathered peers (`keep_peers`)."""
        if not self.peer_table or source is None:
            return False
        n, k, p, r = self.num_slots, self.num_peer_slots, self.peer_dim, self.num_resources
        public, rows, live = source
        if (tuple(public.shape) != (n, p) or tuple(rows.shape) != (n, k) or not public.is_floating_point()
                or (live is not None and (tuple(live.shape) != (n, k) or live.dtype != torch.bool))):
            return False
        if live is not None:  # a slot that is not live shows its row times 0: +0.0 only under finite values >= +0.0
            unsafe = (torch.signbit(public) | ~torch.isfinite(public)).any(dim=1)  # [N] rows whose zeros are not +0.0
            if bool(unsafe.index_select(0, rows.reshape(-1)).view(n, k).logical_and_(~live).any()):
                return False
        table = self.tables[i]
        table[:n].copy_(public)  # in the window's dtype, on its device (the casts act makes of the gathered peers)
        holdings = table[:n, p - r:]
        holdings.copy_(holdings.clamp(min=0).log1p_())  # as act: log1p on a contiguous copy
        shown = self.peer_rows[:, i]  # (the table's row N, the empty slots', is zero: `keep_peers` zeroes it again)
        shown.copy_(rows)
        if live is not None:
            shown.masked_fill_(~live.to(self.device), n)  # the table's row: N for a slot that is not live
        torch.index_select(table, 0, self._table_index(i, 0, n), out=self.step_peers.view(n * k, p))
        self.is_dense[i] = False
        return True

    def keep_peers(self, i: int) -> None:
        """Keep step i's peers, just written into `step_peers` with their rows into `peer_rows[:, i]`: as
        that step's table [N, P] of what each row showed when it gives back every peer's bits, else as they
        are (into `dense[i]`, allocated once and kept). Nothing to do without `peer_table`."""
        if not self.peer_table:
            return
        n, k, p = self.num_slots, self.num_peer_slots, self.peer_dim
        peers, table = self.step_peers.view(n * k, p), self.tables[i]
        shown = self.peer_rows[:, i]
        shown.masked_fill_(shown < 0, n)  # from now on the table's row: N for an empty slot (`_table_index`)
        index = shown.reshape(-1).long()  # [N * K]
        # rows shown by several slots are written several times: with the same values when the table
        # rebuilds the step, which the check below proves (any other values make it fail)
        table.index_copy_(0, index, peers)
        table[n].zero_()  # the empty slots' row (written above by every empty slot)
        kept = True
        for low in range(0, n, _CHECK_ROWS):
            high = min(n, low + _CHECK_ROWS)
            rebuilt = table.index_select(0, index[low * k:high * k])
            if not _same_bits(rebuilt, peers[low * k:high * k]):
                kept = False
                break
        self.is_dense[i] = not kept
        if not kept:
            if self.dense[i] is None:
                self.dense[i] = torch.empty(n, k, p, dtype=self.dtype, device=self.device)
            self.dense[i].copy_(self.step_peers[:, 0])

    def _table_index(self, i: int, low: int, high: int) -> torch.Tensor:
        """[(high - low) * K] int32 the table rows of slots [low, high)'s peers at step i (N: an empty slot):
        with `peer_table`, `keep_peers` leaves `peer_rows` holding these (a checkpoint holds -1 for N)."""
        return self.peer_rows[low:high, i].reshape(-1)

    def _peers_into(self, i: int, low: int, high: int, out: torch.Tensor) -> None:
        """Write step i's peers of slots [low, high) into out [high - low, K, P] (contiguous)."""
        if self.is_dense[i]:
            out.copy_(self.dense[i][low:high])
        else:
            torch.index_select(self.tables[i], 0, self._table_index(i, low, high), out=out.view(-1, self.peer_dim))

    def _scratch(self, numel: int) -> torch.Tensor:
        """numel floats of scratch: `step_peers`' storage (not needed between acts), else a kept block."""
        flat = self.step_peers.view(-1)
        if numel <= flat.numel():
            return flat[:numel]
        if self._extra is None or self._extra.numel() < numel:
            self._extra = torch.empty(numel, dtype=self.dtype, device=self.device)
        return self._extra[:numel]

    def block_peers(self, block: slice, t: int) -> torch.Tensor:
        """[B, t, K, P] the peers of the slots in `block` over steps [0, t), rebuilt into scratch that the
        next call (or act) overwrites. Only with `peer_table`."""
        low, high = block.start or 0, self.num_slots if block.stop is None else block.stop
        b, k, p = high - low, self.num_peer_slots, self.peer_dim
        scratch = self._scratch((t + 1) * b * k * p)
        out, step = scratch[:t * b * k * p].view(b, t, k, p), scratch[t * b * k * p:].view(b, k, p)
        for i in range(t):  # at most T steps: a loop over steps, not agents
            self._peers_into(i, low, high, step)
            out[:, i].copy_(step)
        return out

    def load_step_peers(self, i: int) -> None:
        """Put step i's peers back into `step_peers` (to act on that step again after a load)."""
        if self.peer_table:
            self._peers_into(i, 0, self.num_slots, self.step_peers[:, 0])

    def peers(self, t: int) -> torch.Tensor:
        """[N, t, K, P] the peers of steps [0, t): a view of the window's, or with `peer_table` a new tensor
        rebuilt from the tables (the same values, to the bit)."""
        if not self.peer_table:
            return self.buffer["peers"][:, :t]
        peers = torch.empty(self.num_slots, t, self.num_peer_slots, self.peer_dim, dtype=self.dtype,
                            device=self.device)
        for i in range(t):
            peers[:, i].copy_(self._step_peers_of(i))
        return peers

    def _step_peers_of(self, i: int) -> torch.Tensor:
        """[N, K, P] step i's peers (a view where the window holds them, else a rebuilt tensor)."""
        if not self.peer_table:
            return self.buffer["peers"][:, i]
        if self.is_dense[i]:
            return self.dense[i]
        return self.tables[i].index_select(0, self._table_index(i, 0, self.num_slots)).view(
            self.num_slots, self.num_peer_slots, self.peer_dim)

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self, t: int) -> dict:
        """The filled steps [:, :t] of the buffers (copies, contiguous: saving a view would save its whole
        storage) and the window starts (the live tensor, not a copy: save it before the next update).

        The peers [N, t, K, P] are stored as `peer_rows` [N, t, K] (int32) into `peer_table` [t, N, P]
        (what each row showed at each step) when that rebuilds them to the bit, which it does for
        observations from `Economy` (peers are rows of the public features); otherwise as they are."""
        cpu = torch.device("cpu")  # a checkpoint holds CPU tensors, whatever the device
        state = {"steps": t, "window_start": self.window_start.to(cpu),
                 **{key: self.buffer[key][:, :t].to(cpu, copy=True) for key in self.resumed if key != "peers"}}
        n, p = self.num_slots, self.peer_dim
        rows = self.peer_rows[:, :t]
        if self.peer_table:  # the tables are kept already (and the rows hold N, not -1, for empty slots)
            if not any(self.is_dense[:t]):
                state.update(peer_rows=torch.where(rows == n, -1, rows).to(cpu),
                             peer_table=self.tables[:t, :n].to(cpu, copy=True))
                return state
            state["peers"] = self.peers(t).to(cpu)
            return state
        peers = self.buffer["peers"][:, :t]
        table = torch.zeros(t, n, p, dtype=self.dtype, device=self.device)
        for i in range(t):  # at most T - 1 steps: a loop over steps, not agents
            shown = rows[:, i].long()  # [N, K]
            live = shown >= 0
            table[i].index_put_((shown[live],), peers[:, i][live])
            if not _same_bits(_rebuild(table[i], shown), peers[:, i]):
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
        n, k, p = self.num_slots, self.num_peer_slots, self.peer_dim
        expected = {key: self.buffer[key][:, :t] for key in self.resumed if key != "peers"}
        expected["window_start"] = self.window_start
        shapes = {key: (tuple(mine.shape), mine.dtype) for key, mine in expected.items()}
        if "peers" in state:
            shapes["peers"] = ((n, t, k, p), self.dtype)
        else:
            expected["peer_rows"] = self.peer_rows[:, :t]
            shapes["peer_rows"] = ((n, t, k), self.peer_rows.dtype)
            shapes["peer_table"] = ((t, n, p), self.dtype)
        for key, (shape, dtype) in shapes.items():
            theirs = state.get(key)
            if not isinstance(theirs, torch.Tensor) or tuple(theirs.shape) != shape or theirs.dtype != dtype:
                got = (tuple(theirs.shape), theirs.dtype) if isinstance(theirs, torch.Tensor) else type(theirs).__name__
                raise ValueError(f"learner state's window buffer {key!r} is {got}, expected {(shape, dtype)}")
        if "peer_rows" in expected and t:
            low, high = int(state["peer_rows"].min()), int(state["peer_rows"].max())
            if low < -1 or high >= n:
                raise ValueError(f"learner state's window buffer 'peer_rows' holds rows in [{low}, {high}], "
                                 f"expected -1 or [0, {n})")
        for key, mine in expected.items():
            mine.copy_(state[key])
        for i in range(t):  # at most T - 1 steps: a loop over steps, not agents
            if "peers" in state:  # as they are (the rows they showed are not in the state)
                if self.peer_table:
                    if self.dense[i] is None:
                        self.dense[i] = torch.empty(n, k, p, dtype=self.dtype, device=self.device)
                    self.dense[i].copy_(state["peers"][:, i])
                    self.is_dense[i] = True
                else:
                    self.buffer["peers"][:, i].copy_(state["peers"][:, i])
            elif self.peer_table:
                self.tables[i, :n].copy_(state["peer_table"][i])
                self.tables[i, n].zero_()
                self.is_dense[i] = False
                self.peer_rows[:, i].masked_fill_(self.peer_rows[:, i] < 0, n)  # (`_table_index`)
            else:
                self.buffer["peers"][:, i].copy_(_rebuild(state["peer_table"][i].to(self.device),
                                                          self.peer_rows[:, i].long()))
        return t


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two float tensors hold the same bits (so -0.0 differs from 0.0, and a NaN equals itself)."""
    as_int = {8: torch.int64, 4: torch.int32, 2: torch.int16}[a.element_size()]
    return a.dtype == b.dtype and torch.equal(a.view(as_int), b.view(as_int))


def _rebuild(table: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """[N, K, P] peers from a table [N, P] of what each row showed and the rows shown [N, K] (-1: none, zeros)."""
    return torch.where((shown >= 0).unsqueeze(-1), table[shown.clamp(min=0)], 0.0)
