"""The language-model agent's text interface: the observation template, the JSON action, its checks
(docs/design.md section 12). Plain Python and NumPy: no model, no network.

The prompt of one agent is two chat messages.

System message (the same for every agent of an economy; `system_prompt`)::

    You are one agent in HomoEcon, an artificial economy. Every step you choose a job and an effort,
    how much you want of each good when trading, what fraction of each good to eat, and a message
    for your peers. Your reward is prod_r (1 + eaten_r) ** taste_r - 1, plus a small bonus for rest;
    you starve if you eat too little. Reply with one JSON object and nothing else:
    {"job": "gathering", "effort": 0.8, "trade_weights": {"berries": 0.5, "meat": 0.5},
     "consume": {"berries": 0.5, "meat": 0.5}, "broadcast": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
    job: one of gathering, hunting (or its index 0..1). effort, trade_weights, consume: numbers in
    [0, 1]. broadcast: 6 numbers in [-1, 1] (optional).

User message (one per agent and step; `render_observation`)::

    You are 3 of 10 steps old.
    Holdings: berries 1.234, meat 0.500
    Tastes (utility weights): berries 0.600, meat 0.400
    Last market prices: berries 0.550, meat 0.450
    Season (output per unit of effort, 0..1): gathering 0.910, hunting 0.090
    Your last rewards (oldest first): 0.012, 0.030
    Peers (3 of 9 shown: message; holdings):
    - peer 1: [0.12, -0.50, 0.00, 0.33, 0.90, -1.00]; berries 0.300, meat 1.200
    Your action as one JSON object:

Every value in it is a number the template formats itself (peers' messages are numbers or token ids
the economy checked), so no text of any reply ever reaches another agent's prompt: a hostile reply
cannot inject instructions into its peers' prompts.

Reading a reply (`parse_reply`): the first JSON object in the text (a code fence or words around it
are ignored); a reply longer than `MAX_REPLY_CHARS` is not read. Each field is checked on its own:
- ``job``: a job name (case and surrounding spaces ignored) or an int index in [0, J);
- ``effort``: a real number (not a bool) in [0, 1];
- ``trade_weights``, ``consume``: an object {good: number in [0, 1]} naming every good, or a list of R
  such numbers;
- ``broadcast`` (optional): B numbers in [-1, 1]; in the symbolic mode L ints in [0, V);
- ``move`` (spatial economies only, optional): stay, north, south, west or east, or its index 0..4.
NaN, Infinity, numbers out of range (1e308 included), wrong types and missing required fields are
problems; keys that are not fields are ignored. A field with a problem, or missing, takes the
fallback's value for that field (`fallback` in agents.llm: the scripted heuristic) and the reply
counts as invalid (``llm/invalid_rate``); a missing optional field takes the fallback silently.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

MAX_REPLY_CHARS = 8192  # a longer reply is not parsed at all (a 1 MB reply costs nothing but its transfer)
MOVES = ("stay", "north", "south", "west", "east")  # Actions.move 0..4 (docs/design.md section 13)
REQUIRED = ("job", "effort", "trade_weights", "consume")
OPTIONAL = ("broadcast", "move")


@dataclass(frozen=True)
class ActionSchema:
    """What a reply may hold, for one economy: names and sizes read from the EconomyConfig."""

    goods: tuple[str, ...]
    jobs: tuple[str, ...]
    broadcast_dim: int  # B numbers (continuous mode), 0 in the symbolic mode
    message_length: int  # L tokens (symbolic mode), 0 in the continuous mode
    vocab_size: int  # V (symbolic mode)
    spatial: bool  # the reply may carry a move

    @classmethod
    def from_config(cls, config) -> "ActionSchema":
        symbolic = config.symbolic
        return cls(goods=tuple(config.resources), jobs=tuple(job.name for job in config.jobs),
                   broadcast_dim=0 if symbolic else config.broadcast_dim,
                   message_length=config.message_length if symbolic else 0,
                   vocab_size=config.vocab_size if symbolic else 0,
                   spatial=bool(getattr(config, "spatial", False)))


@dataclass
class ParsedReply:
    """One reply read: the fields that passed their checks, and what was wrong (empty: a valid reply)."""

    values: dict
    problems: list

    @property
    def valid(self) -> bool:
        return not self.problems


def _example(schema: ActionSchema) -> str:
    shares = ", ".join(f'"{good}": {round(1.0 / len(schema.goods), 3)}' for good in schema.goods)
    message = (", ".join(["0.0"] * schema.broadcast_dim) if schema.broadcast_dim
               else ", ".join(["0"] * schema.message_length))
    move = ', "move": "stay"' if schema.spatial else ""
    return (f'{{"job": "{schema.jobs[0]}", "effort": 0.8, "trade_weights": {{{shares}}}, '
            f'"consume": {{{shares}}}, "broadcast": [{message}]{move}}}')


def system_prompt(schema: ActionSchema) -> str:
    """The system message: the rules in brief and the JSON action requested (module docstring)."""
    if schema.broadcast_dim:
        message = f"broadcast: {schema.broadcast_dim} numbers in [-1, 1] (optional)."
    else:
        message = f"broadcast: {schema.message_length} ints in [0, {schema.vocab_size - 1}] (optional)."
    move = f" move: one of {', '.join(MOVES)} (optional)." if schema.spatial else ""
    return ("You are one agent in HomoEcon, an artificial economy. Every step you choose a job and an effort, "
            "how much you want of each good when trading, what fraction of each good to eat, and a message "
            "for your peers. Your reward is prod_r (1 + eaten_r) ** taste_r - 1, plus a small bonus for rest; "
            "you starve if you eat too little. Reply with one JSON object and nothing else:\n"
            f"{_example(schema)}\n"
            f"job: one of {', '.join(schema.jobs)} (or its index 0..{len(schema.jobs) - 1}). effort, "
            f"trade_weights, consume: numbers in [0, 1]. {message}{move}")


def _goods(schema: ActionSchema, values) -> str:
    return ", ".join(f"{good} {float(v):.3f}" for good, v in zip(schema.goods, values))


def _message(schema: ActionSchema, columns: np.ndarray) -> str:
    """A peer's message as the template shows it: B numbers, or L token ids read from the one-hots."""
    if schema.broadcast_dim:
        return "[" + ", ".join(f"{float(v):.2f}" for v in columns) + "]"
    one_hot = columns.reshape(schema.message_length, schema.vocab_size)
    tokens = ["-" if one_hot[i].max() <= 0 else str(int(one_hot[i].argmax())) for i in range(schema.message_length)]
    return "[" + ", ".join(tokens) + "]"


def render_observation(schema: ActionSchema, *, holdings, age: int, max_age: int, tastes, season,
                       prices: Optional[np.ndarray], rewards, peer_messages, peer_holdings, peers_live: int) -> str:
    """The user message of one agent (module docstring). Arrays are NumPy: holdings, tastes [R], season
    [J] (the output factor of each job now), prices [R] or None (no market yet), rewards [M'] (its last
    rewards, oldest first, possibly empty), peer_messages [k, B or L*V] and peer_holdings [k, R] for the k
    peers shown, peers_live the number of live peers in its observation."""
    lines = [f"You are {age} of {max_age} steps old.",
             f"Holdings: {_goods(schema, holdings)}",
             f"Tastes (utility weights): {_goods(schema, tastes)}",
             "Last market prices: " + ("none yet" if prices is None else _goods(schema, prices)),
             "Season (output per unit of effort, 0..1): " + ", ".join(
                 f"{job} {float(v):.3f}" for job, v in zip(schema.jobs, season)),
             "Your last rewards (oldest first): " + (", ".join(f"{float(v):.3f}" for v in rewards)
                                                     if len(rewards) else "none yet")]
    shown = len(peer_messages)
    lines.append(f"Peers ({shown} of {peers_live} shown: message; holdings):" if shown else "Peers: none")
    for k in range(shown):
        lines.append(f"- peer {k + 1}: {_message(schema, peer_messages[k])}; {_goods(schema, peer_holdings[k])}")
    lines.append("Your action as one JSON object:")
    return "\n".join(lines)


# -- reading a reply ----------------------------------------------------------------------------------
class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NonFinite(f"{name} is not a number")


def first_json_object(text: str):
    """The first JSON object in ``text`` (dict), or raise ValueError saying why there is none.
    NaN and Infinity (which Python's json accepts) are refused."""
    decoder = json.JSONDecoder(parse_constant=_refuse_constant)
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except _NonFinite as error:
            raise ValueError(f"not valid JSON: {error}") from None
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise ValueError("no JSON object in the reply")


def _real(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.inf
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {_short(value)}")
    return number


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer(value, name: str, count: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise ValueError(f"{name} must be an int in [0, {count}), got {_short(value)}")
    return int(value)


def _per_good(schema: ActionSchema, value, name: str) -> list:
    goods = schema.goods
    if isinstance(value, dict):
        missing = [good for good in goods if good not in value]
        if missing:
            raise ValueError(f"{name} lacks goods {missing}")
        return [_real(value[good], f"{name}.{good}", 0.0, 1.0) for good in goods]
    if isinstance(value, list):
        if len(value) != len(goods):
            raise ValueError(f"{name} must list {len(goods)} numbers, got {len(value)}")
        return [_real(v, f"{name}[{i}]", 0.0, 1.0) for i, v in enumerate(value)]
    raise ValueError(f"{name} must be an object {{good: number}} or a list, got {type(value).__name__}")


def _choice(value, name: str, options: tuple) -> int:
    if isinstance(value, str):
        key = value.strip().lower()
        lowered = [option.lower() for option in options]
        if key in lowered:
            return lowered.index(key)
        raise ValueError(f"{name} {_short(value)} is not one of {list(options)}")
    return _integer(value, name, len(options))


def _field(schema: ActionSchema, key: str, value):
    if key == "job":
        return _choice(value, "job", schema.jobs)
    if key == "effort":
        return _real(value, "effort", 0.0, 1.0)
    if key in ("trade_weights", "consume"):
        return _per_good(schema, value, key)
    if key == "move":
        return _choice(value, "move", MOVES)
    # broadcast
    size = schema.broadcast_dim or schema.message_length
    if not isinstance(value, list) or len(value) != size:
        raise ValueError(f"broadcast must be a list of {size} {'numbers' if schema.broadcast_dim else 'ints'}, "
                         f"got {_short(value)}")
    if schema.broadcast_dim:
        return [_real(v, f"broadcast[{i}]", -1.0, 1.0) for i, v in enumerate(value)]
    return [_integer(v, f"broadcast[{i}]", schema.vocab_size) for i, v in enumerate(value)]


def parse_reply(schema: ActionSchema, text) -> ParsedReply:
    """Read one reply (module docstring): the valid fields' values, and the problems found.

    Never raises: anything a model (or a hostile server) sends ends as problems."""
    if not isinstance(text, str):
        return ParsedReply({}, [f"no reply ({_short(text)})"])
    if len(text) > MAX_REPLY_CHARS:
        return ParsedReply({}, [f"reply of {len(text)} characters, more than {MAX_REPLY_CHARS}"])
    try:
        data = first_json_object(text)
    except ValueError as error:
        return ParsedReply({}, [str(error)])
    values, problems = {}, []
    fields = REQUIRED + (("broadcast", "move") if schema.spatial else ("broadcast",))
    for key in fields:
        if key not in data:
            if key in REQUIRED:
                problems.append(f"missing {key}")
            continue
        try:
            values[key] = _field(schema, key, data[key])
        except ValueError as error:
            problems.append(str(error))
    return ParsedReply(values, problems)
