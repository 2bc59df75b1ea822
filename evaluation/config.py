"""Evaluation config schema (configs/test/*.yaml), layered like the training configs."""

from dataclasses import dataclass

from utils.layered_config import ConfigError, load_layered


@dataclass
class EvalConfig:
    sampler: str = "edm"  # edm | euler | ddim | ddpm
    num_steps: int = 40
    cfg_scale: float = 1.5
    guidance_sigma_lo: float | None = None  # guide only for σ in [lo, hi] when both are set
    guidance_sigma_hi: float | None = None
    s_churn: float = 0.0
    clip_denoised: bool = False  # ddim / ddpm on pixel models: clamp x̂0 to [−1, 1] (Ho et al.'s code)
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
    for key in ("num_samples", "num_steps", "batch_gpu"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key}: must be positive (got {getattr(cfg, key)})")
    if (cfg.guidance_sigma_lo is None) != (cfg.guidance_sigma_hi is None):
        raise ConfigError("guidance_sigma_lo and guidance_sigma_hi go together")
    return cfg
