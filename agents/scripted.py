"""The scripted policy: a one-line heuristic, the bar a learner must reach (docs/design.md section 5, issue 15).

Every agent, every step:
    job           = the job in season: argmax_j cos^2(pi/2 * t / period_j + phase_j), read from the
                    observation's season features (the cos half), times the share of a full day's
                    work the agent's holdings allow when the job needs inputs (see below)
    effort        = 1 (the economy caps it by age, and by held inputs for jobs that need them)
    trade_weights = the agent's own tastes (its utility weights, from the observation)
    consume       = `eat_fraction` of every good (default 0.9; the economy caps it at max_consume)
    broadcast     = 0 (it says nothing and listens to nobody); in the symbolic mode every token is
                    symbol 0, the same constant message from everyone
    move          = 0 in a spatial world: it stays where it was born (`SpatialScriptedLearner` moves)

It never learns: `update` returns {} and `on_births` has nothing to pass on (a newborn reads its own
tastes from its observation). `last_attention` is uniform over live peers, like the random learner's,
so the attention diagnostics run.

Jobs with inputs (supply chains): a unit of effort uses `Job.inputs` from the worker's holdings, and
the economy caps effort at what the worker holds. The score of a job is its season factor times
min(1, held / needed) over its inputs, i.e. the output a full-effort day would really yield per unit
of peak output, so an agent without a job's inputs does not pick it. Nothing more: it does not plan a
chain (buy inputs, then work) nor weigh a job's output by its tastes or prices. On economies whose
jobs need no inputs (the default) the score is the season factor alone.

`ChainScriptedLearner` (``--learner scripted_chain``, below) is the reference policy for supply chains:
a planned division of labour along the chain that buys and keeps its job's inputs.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from agents import spatial
from agents.baselines import uniform_attention_weights
from homoecon_env.config import EconomyConfig
from homoecon_env.core import Actions, Observation, StepOutput, signals
from homoecon_env.core.lifecycle import Births
from homoecon_env.core.production import JobTable

DEFAULT_EAT_FRACTION = 0.9
KEPT_INPUT_EATEN = 0.05  # scripted_chain eats this share of eat_fraction of its job's inputs (enough not to starve)


class ScriptedLearner:
    """Full effort on the job in season, trade for one's own tastes, eat `eat_fraction`; never learns.

    Batched over slots: every row of the observation is handled by the same few tensor operations.
    `eat_fraction` (in [0, 1]) is the consumed fraction of every good; built by name (`--learner
    scripted`) it is 0.9, the issue's heuristic; `ScriptedLearner(config, None, eat_fraction=0.5)`
    measures the variant eating half.
    """

    def __init__(self, economy_config: EconomyConfig, learner_config=None, eat_fraction: float = DEFAULT_EAT_FRACTION):
        from agents.config import LearnerConfig
        self.economy_config = economy_config
        self.config = learner_config or LearnerConfig()
        self.eat_fraction = self._checked_fraction(eat_fraction)
        c = economy_config
        r, j = c.num_resources, c.num_jobs
        base_dim = 2 * r + 2 + c.message_width + c.id_dim + 2 * j  # S without private signals' columns
        # S, layout in homoecon_env.core.observe: private signals' columns, then a spatial world's
        self.self_dim = base_dim + signals.extra_dims(c)[0] + spatial.self_dims(c)
        self.tastes_columns = (r + 2, 2 * r + 2)  # utility weights [R]
        self.season_cos_columns = (base_dim - j, base_dim)  # cos of every job's season angle [J]
        jobs = JobTable.from_config(c)
        self.needs_inputs = jobs.needs_inputs
        self.job_inputs = torch.from_numpy(jobs.inputs).to(torch.float32)  # [J, R] goods used per unit of effort
        self.last_attention = torch.zeros(c.num_agents, c.peers_observed)  # [N, K]

    @staticmethod
    def _checked_fraction(value, name: str = "eat_fraction") -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
        return float(value)

    def job_scores(self, self_features: torch.Tensor) -> torch.Tensor:
        """[N, J] the output a full-effort day would give per unit of peak output: the season factor
        cos^2, times min(1, held / needed) over the job's inputs when it needs any."""
        start, stop = self.season_cos_columns
        scores = self_features[:, start:stop] ** 2  # [N, J] season factor
        if self.needs_inputs:
            scores = scores * self.input_share(self_features)
        return scores

    def input_share(self, self_features: torch.Tensor) -> torch.Tensor:
        """[N, J] min(1, held / needed) over each job's inputs: the share of a full day's work the holdings allow."""
        holdings = self_features[:, :self.economy_config.num_resources].clamp(min=0)  # [N, R]
        needed = self.job_inputs[None, :, :]  # [1, J, R]
        ratio = torch.where(needed > 0, holdings[:, None, :] / needed.clamp(min=1e-30), torch.ones(()))  # [N, J, R]
        return ratio.amin(dim=2).clamp(max=1.0)

    def act(self, observation: Observation) -> Actions:
        features = observation.self_features  # [N, S]
        if features.ndim != 2 or features.shape[1] != self.self_dim:
            raise ValueError(f"observation.self_features has shape {tuple(features.shape)}; "
                             f"expected [N, {self.self_dim}] for this learner's economy config")
        n, c = features.shape[0], self.economy_config
        start, stop = self.tastes_columns
        self.last_attention = uniform_attention_weights(observation.peer_mask)
        return Actions(
            # [N, B] zeros; symbolic mode: [N, L] token 0s (a constant message, no information)
            broadcast=torch.zeros(n, c.message_length, dtype=torch.int64) if c.symbolic
            else torch.zeros(n, c.broadcast_dim),
            job=self.job_scores(features).argmax(dim=1),  # [N] first job on a tie
            effort=torch.ones(n),  # [N]
            trade_weights=features[:, start:stop].clone(),  # [N, R] own tastes
            consume=torch.full((n, c.num_resources), self.eat_fraction),  # [N, R]
            move=torch.zeros(n, dtype=torch.int64) if c.spatial else None,  # [N] stays put (a spatial world)
        )

    def update(self, step: StepOutput) -> dict:
        return {}

    def on_births(self, births: Births) -> None:
        pass

    def state_dict(self) -> dict:
        return {"eat_fraction": self.eat_fraction, "last_attention": self.last_attention.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.eat_fraction = self._checked_fraction(state["eat_fraction"])
        self.last_attention = state["last_attention"].clone()


class ChainScriptedLearner(ScriptedLearner):
    """The scripted policy for supply chains (``--learner scripted_chain``): a planned division of labour
    along the chain; every agent works its slot's job, buys that job's inputs and keeps them; never learns.

    The plan (`homoecon_env.diagnostics.supply_chain.balanced_plan`): shares of labour per job that make
    the final goods in proportion to the economy's ``taste_scale`` (all alike when None) while every
    intermediate is made as fast as the recipes use it; slots are cut into blocks of those sizes, so a
    newborn takes over its slot's job. Every agent, every step:
        job           = its slot's job in the plan
        trade_weights = own tastes + the job's inputs as shares of its recipe (normalised by the economy):
                        it trades for what it eats and for what it needs to work tomorrow (production
                        comes before trade in a step, so inputs bought today are worked tomorrow)
        consume       = `eat_fraction` of every good except its job's inputs, which it keeps
        effort, broadcast: as the plain heuristic (1, and silence)
    Nothing is learned or remembered, so frozen and learning evaluations act alike. On economies whose
    jobs need no inputs every job is a raw job and the plan splits the slots over them by ``taste_scale``.

    ``roles="id"`` cuts the same blocks along the first public id coordinate (uniform on [-1, 1]) instead of
    the slot: an agent's job is then a function of what it observes, which a network can learn, and a
    newborn's job follows from its own id (`agents.reference` clones this one).

    Why a plan and not prices: a version that picked, each step, the job adding most value at the last
    market prices (given its held inputs) herded: every agent saw the same prices and moved to the same
    job, and on `supply_chain` fewer than 0.2 final goods a step were made (docs/design.md section 9).
    """

    def __init__(self, economy_config: EconomyConfig, learner_config=None, eat_fraction: float = DEFAULT_EAT_FRACTION,
                 roles: str = "slot"):
        from homoecon_env.diagnostics import supply_chain
        super().__init__(economy_config, learner_config, eat_fraction)
        if roles not in ("slot", "id"):
            raise ValueError(f"roles must be 'slot' or 'id', got {roles!r}")
        self.roles = roles
        jobs = JobTable.from_config(economy_config)
        layers = supply_chain.good_layers(jobs.output, jobs.inputs)
        final = supply_chain.final_goods(jobs.output, jobs.inputs)
        if not (final & (layers >= 0)).any():  # every makeable good is someone's input: aim at the deepest
            final = layers == layers.max()
        scale = np.asarray(economy_config.taste_scale or (1.0,) * economy_config.num_resources)
        self.plan = supply_chain.balanced_plan(jobs.output, jobs.inputs, scale * final)  # [J] labour shares
        self.slot_job = torch.from_numpy(supply_chain.plan_assignment(self.plan, economy_config.num_agents))  # [N]
        recipe_total = self.job_inputs.sum(dim=1, keepdim=True)  # [J, 1]
        self.input_shares = self.job_inputs / recipe_total.clamp(min=1e-30)  # [J, R], rows sum to 1 or 0
        self.cumulative_plan = torch.tensor(np.cumsum(self.plan), dtype=torch.float32)  # [J] block ends on [0, 1]
        self.id_column = 2 * economy_config.num_resources + 2 + economy_config.message_width  # own id_vectors[:, 0]

    def act(self, observation: Observation) -> Actions:
        actions = super().act(observation)  # checks the observation; tastes, effort, broadcast as the plain one
        if self.roles == "id":
            position = (observation.self_features[:, self.id_column].float() + 1) / 2
            job = torch.searchsorted(self.cumulative_plan, position.contiguous()).clamp_(max=len(self.plan) - 1)
        else:
            job = self.slot_job[:actions.job.shape[0]]
        inputs = self.input_shares[job]  # [N, R]
        return Actions(broadcast=actions.broadcast, job=job.clone(), effort=actions.effort,
                       trade_weights=actions.trade_weights + inputs,
                       consume=torch.where(inputs > 0, actions.consume * KEPT_INPUT_EATEN, actions.consume),
                       move=actions.move)


class ScriptedIgnorer(ScriptedLearner):
    """The best scripted policy that ignores peers, for the positive control (docs/design.md section 11).

    As `ScriptedLearner`, except the job: a scout (its own boom columns are not all zero) works the
    job in boom, its own private signal; everyone else works the job whose output, at this step's
    season, its own tastes value most: argmax_j season_j * (tastes . output_j). Without private signals
    nobody is a scout. Build by import path: ``--learner agents.scripted:ScriptedIgnorer``.
    """

    listens = False

    def __init__(self, economy_config: EconomyConfig, learner_config=None, eat_fraction: float = DEFAULT_EAT_FRACTION):
        super().__init__(economy_config, learner_config, eat_fraction)
        c = economy_config
        self.job_output = torch.from_numpy(JobTable.from_config(c).output).to(torch.float32)  # [J, R]
        signal_end = self.self_dim - spatial.self_dims(c)  # (a spatial world's columns follow the signals')
        self.signal_columns = (signal_end - signals.extra_dims(c)[0], signal_end)  # own boom one-hot [J]
        b, d, j = c.message_width, c.id_dim, c.num_jobs
        self.peer_job_columns = (b + d, b + d + signals.extra_dims(c)[1])  # a peer's last-job one-hot [J]
        self.peer_id_column = b  # a peer's id_vectors[:, 0]: scouts are above the threshold
        self.scout_threshold = signals.scout_threshold(c)
        self.num_jobs = j

    def own_choice(self, features: torch.Tensor) -> torch.Tensor:
        """[N] the job a peer-ignoring agent works: the boom for scouts, else its tastes' favourite output."""
        start, stop = self.tastes_columns
        valued = features[:, start:stop] @ self.job_output.T  # [N, J] tastes . output_j
        job = (self.job_scores(features) * valued).argmax(dim=1)
        start, stop = self.signal_columns
        if stop > start:
            boom = features[:, start:stop]  # [N, J]; all zero for non-scouts
            job = torch.where(boom.sum(dim=1) > 0, boom.argmax(dim=1), job)
        return job

    def choose_job(self, observation: Observation) -> torch.Tensor:
        return self.own_choice(observation.self_features)

    def act(self, observation: Observation) -> Actions:
        actions = super().act(observation)
        return Actions(broadcast=actions.broadcast, job=self.choose_job(observation), effort=actions.effort,
                       trade_weights=actions.trade_weights, consume=actions.consume, move=actions.move)


class ScriptedListener(ScriptedIgnorer):
    """`ScriptedIgnorer` plus listening (docs/design.md section 11): a non-scout with at least one live
    scout among its peers (peer id_vectors[:, 0] above the scout threshold) works the job most of
    those scouts worked last step (ties to the lowest job); without one it falls back to the
    ignorer's choice. Scouts still follow their own signal. ``--learner agents.scripted:ScriptedListener``.
    """

    listens = True

    def choose_job(self, observation: Observation) -> torch.Tensor:
        job = self.own_choice(observation.self_features)
        start, stop = self.peer_job_columns
        if stop == start:  # no private signals: nothing to listen to
            return job
        peers = observation.peers  # [N, K, P]
        scout = (peers[..., self.peer_id_column] > self.scout_threshold) & (observation.peer_mask > 0)  # [N, K]
        votes = (peers[..., start:stop] * scout[..., None]).sum(dim=1)  # [N, J] scouts' last jobs
        start, stop = self.signal_columns
        own_scout = observation.self_features[:, start:stop].sum(dim=1) > 0
        heard = (votes.sum(dim=1) > 0) & ~own_scout
        self.last_attention = torch.where(scout.any(dim=1, keepdim=True),
                                          scout / scout.sum(dim=1, keepdim=True).clamp(min=1), self.last_attention)
        return torch.where(heard, votes.argmax(dim=1), job)


class SpatialScriptedLearner(ScriptedLearner):
    """The reference policy for spatial worlds (``--learner scripted_spatial``, docs/design.md section 13): it
    works the job worth most in its region and migrates; never learns.

    The value of job j in region g, per unit of effort, is what a day's output would fetch at the own
    region's last prices (its own tastes where its region held no market):
        value(g, j) = resource_map[g, j] * cos^2(theta_j + region_phase_shift * x_g) * (prices . output_j)
    with theta_j the season angle of the observation and x_g the region's column (the seasons of a
    region are shifted by its column, `homoecon_env.core.space`). Every agent, every step:
        job   = the job worth most in the region it works in this step (moves come before production)
        move  = with probability `move_rate` (0.3) it considers moving, else it stays. Without a carrying
                capacity it then moves to the neighbour whose best job is worth most, if that gain over the
                rest of its life, (best there - best at home) * (max_age - age), exceeds what the move
                costs, migration_cost * (prices . holdings). With a carrying capacity it moves to a
                neighbouring region drawn uniformly (the grid's edges excluded).
        effort, trade_weights, consume, broadcast: as `ScriptedLearner`
    Why the two rules: crowds cannot be seen (peers carry no region, and with peer_radius > 0 they come
    from the neighbours too), and the economy concentrates agents by itself: parents are drawn by
    lifetime reward and children are born in a parent's region. On the `spatial` scenario (carrying
    capacity 3, 80 agents on 16 regions) moving towards the best-valued neighbour herded everyone into
    one region within 200 steps, and its mean reward per agent-step (0.066) was below random's (0.089)
    and the staying heuristic's (0.069); dispersing at rate 0.3 spread the population (at most 10-15 in a
    region) and reached 0.215 (seeds 0 and 1; at rates 0.15 and 0.5 within 0.01 of it). Moving only
    when a neighbour is valued higher, or splitting a region's workers over jobs by slot, did worse.
    The draws come from its own generator (`LearnerConfig.seed`), saved in its state. Outside a spatial
    world it acts exactly as `ScriptedLearner` (move None).
    """

    def __init__(self, economy_config: EconomyConfig, learner_config=None, eat_fraction: float = DEFAULT_EAT_FRACTION,
                 move_rate: float = 0.3):
        from homoecon_env.core.space import SpaceTable
        super().__init__(economy_config, learner_config, eat_fraction)
        self.move_rate = self._checked_fraction(move_rate, "move_rate")
        c = economy_config
        self.generator = torch.Generator().manual_seed(self.config.seed)
        table = SpaceTable.from_config(c)
        self.destinations = spatial.destinations(c)  # [G, 5]
        self.region_yields = torch.from_numpy(table.resource_map).to(torch.float32)  # [G, J]
        self.region_shift = torch.from_numpy(table.phase_offset).to(torch.float32)  # [G] radians
        self.job_output = torch.from_numpy(JobTable.from_config(c).output).to(torch.float32)  # [J, R]
        self.coordinates, self.prices = spatial.region_columns(c, self.self_dim)
        self.season_sin_columns = (self.season_cos_columns[0] - c.num_jobs, self.season_cos_columns[0])

    def regions(self, features: torch.Tensor) -> torch.Tensor:
        """[N] int64 own region g = y * W + x, read back from the observed coordinates."""
        c = self.economy_config
        xy = features[:, self.coordinates]  # [N, 2] in [0, 1]
        x = (xy[:, 0] * max(c.world_width - 1, 1)).round().long()
        y = (xy[:, 1] * max(c.world_height - 1, 1)).round().long()
        return y * c.world_width + x

    def market_prices(self, features: torch.Tensor) -> torch.Tensor:
        """[N, R] the own region's last prices, or the own tastes where the region held no market (zeros)."""
        prices = features[:, self.prices]
        start, stop = self.tastes_columns
        return torch.where(prices.sum(1, keepdim=True) > 0, prices, features[:, start:stop])

    def job_values(self, features: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """[N, 5, J] value of a unit of effort on job j in the region each move leads to (module formula)."""
        start, stop = self.season_sin_columns
        angle = torch.atan2(features[:, start:stop], features[:, self.season_cos_columns[0]:self.season_cos_columns[1]])
        destination = self.destinations[region]  # [N, 5]
        season = torch.cos(angle[:, None, :] + self.region_shift[destination][..., None]) ** 2  # [N, 5, J]
        worth = self.market_prices(features) @ self.job_output.T  # [N, J] a unit of each job's output
        values = self.region_yields[destination] * season * worth[:, None, :]
        if self.needs_inputs:  # a job needing inputs is worth what the held inputs let it make
            values = values * self.input_share(features)[:, None, :]
        return values

    def choose_moves(self, features: torch.Tensor, region: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[N] int64 moves by the class docstring's rule."""
        c, n = self.economy_config, features.shape[0]
        considers = torch.rand(n, generator=self.generator) < self.move_rate
        destination = self.destinations[region]  # [N, 5]
        if c.carrying_capacity > 0:  # disperse: a uniform real neighbour
            real = (destination != region[:, None]).to(torch.float32)  # [N, 5]; stay (column 0) is never real
            pick = torch.multinomial(real + (real.sum(1, keepdim=True) == 0), 1, generator=self.generator)
            return torch.where(considers & (real.sum(1) > 0), pick.squeeze(1), 0)
        best = values.amax(dim=2)  # [N, 5]
        target = best.argmax(dim=1)  # [N] 0 (stay) on a tie
        life_left = c.max_age * (1.0 - features[:, c.num_resources]).clamp(min=0.0)  # [N] steps left to live
        holdings = features[:, :c.num_resources].clamp(min=0)
        wealth = (self.market_prices(features) * holdings).sum(1)  # [N] at the own region's prices
        gain = (best.gather(1, target[:, None]).squeeze(1) - best[:, 0]) * life_left
        return torch.where(considers & (target > 0) & (gain > c.migration_cost * wealth), target, 0)

    def act(self, observation: Observation) -> Actions:
        actions = super().act(observation)  # checks the observation; effort, trade, consume, broadcast
        if not self.economy_config.spatial:
            return actions
        features = observation.self_features
        region = self.regions(features)
        values = self.job_values(features, region)  # [N, 5, J]
        move = self.choose_moves(features, region, values)
        job = values[torch.arange(features.shape[0]), move].argmax(dim=1)  # the best job where it works now
        return Actions(broadcast=actions.broadcast, job=job, effort=actions.effort,
                       trade_weights=actions.trade_weights, consume=actions.consume, move=move)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "move_rate": self.move_rate, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.move_rate = self._checked_fraction(state["move_rate"], "move_rate")
        self.generator.set_state(state["generator"])
