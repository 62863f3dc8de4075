"""Transfer strategies by name. To add one: subclass :class:`Strategy`, then list it in ``STRATEGIES``."""

import inspect
from typing import Any

from graft.errors import GraftError
from graft.strategies.base import Phase, Strategy
from graft.strategies.basic import Frozen, Full, Scratch
from graft.strategies.transfer import Features, Finetune, LinearProbeFinetune

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Features, Frozen, Finetune, Full, LinearProbeFinetune, Scratch)}

__all__ = ["STRATEGIES", "Phase", "Strategy", "get_strategy"]


def get_strategy(name: str, **options: Any) -> Strategy:
    """The strategy called ``name``, built with the options it takes (others are ignored)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise GraftError(f"unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}") from None
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})
