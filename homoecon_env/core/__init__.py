"""The batched economy core: all agents as rows of tensors, one pure function per stage of a step."""
from homoecon_env.core.actions import Actions
from homoecon_env.core.economy import Economy, MarketNotConvergedWarning, NonFiniteStateError, StepOutput
from homoecon_env.core.observe import Observation
from homoecon_env.core.state import EconomyState

__all__ = ["Actions", "Economy", "EconomyState", "MarketNotConvergedWarning", "NonFiniteStateError", "Observation",
           "StepOutput"]
