"""Transfer strategies by name. To add one: subclass :class:`Strategy`, then list it in ``STRATEGIES``.

A strategy's options are its constructor's keyword arguments (``finetune``'s ``unfreeze``), so the CLI,
the Python API and the run description all learn them from the class itself.
"""

import inspect
from typing import Any

from graft.errors import GraftError
from graft.strategies.base import Phase, Strategy
from graft.strategies.basic import Frozen, Full, Scratch
from graft.strategies.transfer import Features, Finetune, LinearProbeFinetune

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Features, Frozen, Finetune, Full, LinearProbeFinetune, Scratch)}

__all__ = ["STRATEGIES", "Phase", "Strategy", "every_strategy_option", "get_strategy", "strategy_options"]


def strategy_class(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise GraftError(f"unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}") from None


def strategy_options(name: str) -> list[str]:
    """The option names strategy ``name`` takes (its constructor's keyword arguments)."""
    return [p for p in inspect.signature(strategy_class(name)).parameters if p not in ("self", "args", "kwargs")]


def every_strategy_option() -> set[str]:
    """The options any strategy takes (given to a strategy that does not take it, one is an error)."""
    return {option for name in STRATEGIES for option in strategy_options(name)}


def get_strategy(name: str, **options: Any) -> Strategy:
    """The strategy called ``name`` built with ``options``; an option it does not take is an error.

    ``None`` means "not given", so a caller can pass every option it knows of; a value given to a
    strategy that has no use for it (``--unfreeze 2`` with ``full``) would be silently ignored otherwise.
    """
    accepted = strategy_options(name)
    given = {k: v for k, v in options.items() if v is not None}
    if unused := [k for k in given if k not in accepted]:
        takes = f"it takes {', '.join('--' + o.replace('_', '-') for o in accepted)}" if accepted else "it takes no options"
        raise GraftError(
            f"--{unused[0].replace('_', '-')} does not apply to strategy '{name}' ({takes}); drop it or choose another strategy"
        )
    return strategy_class(name)(**given)
