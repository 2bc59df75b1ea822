"""Evaluation config schema (configs/test/*.yaml), layered like the training configs. The defaults are the
MaskDiT paper's FID-50K protocol (configs/test/maskdit-256.yaml names it); files set only what differs."""

from dataclasses import dataclass, field

from diffusion.generation import SamplingOptions
from utils.layered_config import ConfigError, load_layered


@dataclass
class EvalConfig:
    # the sampler (diffusion/generation.py); default: the MaskDiT paper's FID-50K setting, Heun 40 steps, CFG 1.5
    sampling: SamplingOptions = field(default_factory=lambda: SamplingOptions(num_steps=40, cfg_scale=1.5))
    num_samples: int = 50_000
    seed_start: int = 0
    batch_gpu: int = 64  # images per forward batch and process
    features: str = "inception"  # inception | fmnist_classifier
    inception: str | None = None  # weights file; default $MASKDIT_INCEPTION or the cache (downloaded when online)
    pr_features: int = 10_000  # feature vectors per side for precision/recall (0 = skip)


def load_eval_config(path, overrides=()) -> EvalConfig:
    cfg = load_layered(EvalConfig, path, overrides)
    if cfg.features not in ("inception", "fmnist_classifier"):
        raise ConfigError(f"features: {cfg.features!r} is not one of inception | fmnist_classifier")
    for key in ("num_samples", "batch_gpu"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}: must be positive (got {getattr(cfg, key)})")
    if (problem := cfg.sampling.problem()) is not None:
        raise ConfigError(f"sampling.{problem}")
    return cfg
