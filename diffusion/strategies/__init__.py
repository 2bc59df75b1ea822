"""Noise-level strategies, selected by `diffusion.strategy.name` with keyword `diffusion.strategy.params`."""

from diffusion.strategies.adaptive import AdaptiveWeighting, ExcessLoss, ImportanceSampling, LearningProgress
from diffusion.strategies.base import NoiseLevelStrategy
from diffusion.strategies.ddpm import DDPMUniform, P2Weighting
from diffusion.strategies.edm import EDMLogNormal
from diffusion.strategies.params import params_problem
from diffusion.strategies.snr import LaplaceLogSNR, LogitNormal, MinSNR
from diffusion.strategies.speed import SpeeD, SpeeDEDM

STRATEGIES = {cls.name: cls for cls in (EDMLogNormal, DDPMUniform, SpeeD, SpeeDEDM, MinSNR, LogitNormal,
                                        LaplaceLogSNR, P2Weighting, AdaptiveWeighting, ImportanceSampling,
                                        LearningProgress, ExcessLoss)}


def strategy_problem(name: str, params: dict) -> str | None:
    """What is wrong with `diffusion.strategy` (as 'name: ...' or 'params.key: ...'), or None."""
    if name not in STRATEGIES:
        return f"name: unknown strategy {name!r}; choose from {' | '.join(sorted(STRATEGIES))}"
    problem = params_problem(STRATEGIES[name], params)
    return None if problem is None else f"params.{problem}"


def build_strategy(name: str, params: dict, sigma_data: float) -> NoiseLevelStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"diffusion.strategy.name: unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    try:
        return STRATEGIES[name](sigma_data=sigma_data, **params)
    except TypeError as err:
        raise ValueError(f"diffusion.strategy.params for {name!r}: {err}") from None
