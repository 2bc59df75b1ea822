"""Noise-level strategies, selected by `diffusion.strategy.name` in the config."""

from diffusion.strategies.base import NoiseLevelStrategy
from diffusion.strategies.edm import EDMLogNormal

STRATEGIES = {cls.name: cls for cls in (EDMLogNormal,)}


def build_strategy(name: str, params: dict, sigma_data: float) -> NoiseLevelStrategy:
    """`params` are the strategy's own keyword arguments (config `diffusion.strategy.params`)."""
    if name not in STRATEGIES:
        raise ValueError(f"diffusion.strategy.name: unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    try:
        return cls(sigma_data=sigma_data, **params)
    except TypeError as err:
        raise ValueError(f"diffusion.strategy.params for {name!r}: {err}") from None
