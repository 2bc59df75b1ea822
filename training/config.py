"""Typed training config schema: schema defaults ← base file(s) ← experiment file ← CLI dotlist.

The schema defaults are the MaskDiT paper's ImageNet-256 recipe (REFERENCE.md §1; configs/train/
imagenet256-latent.yaml adds only the data path, compile and output intervals). Every config file sets only
what differs from its base, so each value has one source (tests/test_training_parts.py checks).

The layering itself (and the one-line errors naming a file and key) lives in utils/layered_config.py.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diffusion.generation import SamplingOptions
from models.ema_profiles import MAX_SIGMA_REL
from models.maskdit import ARCHS, CHECKPOINTING
from models.routing import RouteSpec
from utils.layered_config import ConfigError, load_layered


@dataclass
class ModelConfig:
    arch: str = "XL"  # S | B | L | XL: MaskDiT/DiT depth/width/heads preset (DiT Table 1); ddpm_unet: DDPM U-Net
    precond: str = "edm"  # edm (EDM Table 1) | vp (ε-prediction on DDPM's schedule, the DDPM baseline)
    patch_size: int = 2
    depth: int | None = None  # overrides the preset when set
    width: int | None = None
    heads: int | None = None
    resolution: int = 32  # input side (pixels, or latent side for latent data)
    in_channels: int = 4
    num_classes: int = 1000  # 0 = unconditional
    label_dropout: float = 0.1
    use_decoder: bool = True  # false = DiT baseline
    decoder_depth: int = 8
    decoder_width: int = 512
    decoder_heads: int = 16
    mlp_ratio: float = 4.0
    sigma_data: float = 0.5
    grad_checkpointing: str = "none"  # none | all | encoder | decoder: blocks recomputed in backward (memory)
    grad_checkpointing_every: int = 1  # of those blocks, every k-th (2 = half of them)
    residual_bf16: bool = False  # with train.mixed_precision bf16: residual stream in bf16 (less memory traffic)
    unet_channels: int = 128  # ddpm_unet only: base width (DDPM CIFAR-10: 128)
    unet_dropout: float = 0.1  # ddpm_unet only
    route: RouteSpec = field(default_factory=RouteSpec)  # TREAD token routing: ratio (0 = off), start, end


@dataclass
class DataConfig:
    source: str = "fashion_mnist"  # fashion_mnist | cifar10 (pixels, in memory) | lmdb | wds (latents)
    path: str | None = None  # directory / file of the source; None = the source's default location
    xflip: bool = False  # random horizontal flips (latents: the stored flipped copies)
    num_workers: int = 4  # DataLoader workers per process (lmdb, wds)
    shuffle_buffer: int = 10_000  # wds: samples mixed across shards


@dataclass
class MaskConfig:
    ratio: float = 0.5  # fraction of tokens removed before the encoder
    schedule: str = "constant"  # constant | linear | cosine (from ratio to ratio_end over total_kimg)
    ratio_end: float = 0.5
    mae_weight: float = 0.1


@dataclass
class StrategyConfig:
    name: str = "edm"
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the strategy


@dataclass
class DiffusionConfig:
    strategy: StrategyConfig = field(default_factory=StrategyConfig)


@dataclass
class DispersiveConfig:
    """Dispersive loss (Wang & He 2025; diffusion/dispersive.py); defaults: the authors' settings."""

    weight: float = 0.5  # λ: total = diffusion loss + λ·L_disp (their PyTorch port: 0.25)
    temperature: float = 0.5  # τ (the port: 1)
    block_fraction: float = 0.25  # the output of encoder block round(fraction × depth), from 1: depth // 4


@dataclass
class SelfAlignmentConfig:
    """Self-representation alignment (SRA, arXiv 2505.02831; diffusion/self_alignment.py); defaults: the authors'
    SiT-XL/2 ImageNet-256 settings."""

    weight: float = 0.2  # of the smooth-L1 alignment term, before the late decay
    student_block_fraction: float = 8 / 28  # the online network's block (8 of 28), through the projection head
    teacher_block_fraction: float = 20 / 28  # the EMA network's block (20 of 28)
    max_time_shift: float = 0.2  # the teacher's time t' = t − U(0, max) on the linear path t = σ / (1 + σ)
    smooth_l1_beta: float = 0.05
    decay_start_kimg: float = 192_175  # 150 ImageNet epochs (1,281,167 images each): then 10× smaller per
    decay_kimg: float = 1_281_167  # this many kimg (1000 epochs)


@dataclass
class ReprConfig:
    """A representation loss beside the diffusion loss, computed from the network itself (issue #30)."""

    kind: str = "none"  # none | dispersive | sra
    dispersive: DispersiveConfig = field(default_factory=DispersiveConfig)
    sra: SelfAlignmentConfig = field(default_factory=SelfAlignmentConfig)


@dataclass
class LossConfig:
    repr: ReprConfig = field(default_factory=ReprConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_kimg: float = 0.0  # linear lr warmup
    grad_clip: float = 0.0  # max grad norm; 0 = off


@dataclass
class PosthocEMAConfig:
    """Post-hoc EMA (EDM2 §3): power-function EMAs tracked during training, snapshotted for reconstruct_ema.py."""

    sigma_rels: list[float] = field(default_factory=list)  # EMA lengths tracked (EDM2: [0.05, 0.10]); [] = off
    snapshot_kimg: float = 0.0  # fp16 snapshots of each every this many kimg, and at the end of training


@dataclass
class TrainConfig:
    total_kimg: float = 2_048_000.0
    batch_size: int = 1024  # global, over all processes and accumulation rounds
    batch_gpu: int | None = None  # per-process micro-batch; None = batch_size / num_processes
    mixed_precision: str = "bf16"  # no | fp16 | bf16
    tf32: bool = True
    compile: str = "none"  # what torch.compile compiles: none | net | blocks | step (training/compile_scope.py)
    compile_strict: bool = False  # a scope that fails to compile stops the run instead of falling back
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: trace without code generation)
    activation_memory_budget: float = 1.0  # compiled runs: share of activations kept for backward (<1 recomputes)
    fp8: bool = False  # float8 block linears with torchao (training/fp8.py); CUDA capability ≥ 8.9 and bf16 only
    ddp_bucket_mb: int = 25  # DDP gradient bucket size: PyTorch's default, near-optimal in Li et al. 2020 (VLDB) §5
    ema_decay: float | None = 0.9999  # per optimizer step; or set ema_halflife_kimg instead
    ema_halflife_kimg: float | None = None
    ema_rampup_ratio: float | None = None  # EDM: half-life ≤ ratio × images seen
    posthoc_ema: PosthocEMAConfig = field(default_factory=PosthocEMAConfig)
    seed: int = 0
    log_kimg: float = 10.0
    checkpoint_kimg: float = 1000.0
    snapshot_kimg: float = 1000.0
    snapshot_minutes: float = 0.0  # also snapshot every this many minutes of training clock (0 = off)
    snapshot_at_kimg: list[float] = field(default_factory=list)  # also snapshot when training passes each point
    sample_kimg: float = 1000.0  # sample grid interval, and one at the end; 0 = no grids
    keep_checkpoints: int = 2
    keep_snapshots: int = 5


@dataclass
class GridConfig:
    """Sample grid written every sample_kimg: EMA weights, image i = generate.py's image with seed i."""

    num_images: int = 64
    sampling: SamplingOptions = field(default_factory=lambda: SamplingOptions(num_steps=18))


@dataclass
class Config:
    name: str = "run"
    run_dir: str | None = None  # default: results/<name>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grid: GridConfig = field(default_factory=GridConfig)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Layer schema ← files ← `key=value` overrides and validate; returns a typed Config object."""
    config = load_layered(Config, path, overrides)
    validate(config)
    return config


def validate(cfg: Config) -> None:
    """Cross-key checks that the schema types cannot express."""
    train_cfg = cfg.train
    if train_cfg.mixed_precision == "False":
        train_cfg.mixed_precision = "no"  # YAML 1.1 reads a bare `no` (train.mixed_precision=no) as false
    if train_cfg.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"train.mixed_precision: {train_cfg.mixed_precision!r} is not one of no | fp16 | bf16")
    if (train_cfg.ema_decay is None) == (train_cfg.ema_halflife_kimg is None):
        raise ConfigError("train: set exactly one of ema_decay and ema_halflife_kimg (the other to null)")
    check_posthoc_ema(train_cfg.posthoc_ema)
    from diffusion.strategies import strategy_problem

    if (problem := strategy_problem(cfg.diffusion.strategy.name, dict(cfg.diffusion.strategy.params))) is not None:
        raise ConfigError(f"diffusion.strategy.{problem}")
    if train_cfg.total_kimg <= 0:
        raise ConfigError(f"train.total_kimg: must be positive (got {train_cfg.total_kimg})")
    if any(kimg <= 0 for kimg in train_cfg.snapshot_at_kimg):
        raise ConfigError(f"train.snapshot_at_kimg: {list(train_cfg.snapshot_at_kimg)} must be positive points (kimg)")
    if train_cfg.batch_size <= 0 or (train_cfg.batch_gpu is not None and train_cfg.batch_gpu <= 0):
        raise ConfigError("train.batch_size and train.batch_gpu must be positive")
    if cfg.mask.schedule not in ("constant", "linear", "cosine"):
        raise ConfigError(f"mask.schedule: {cfg.mask.schedule!r} is not one of constant | linear | cosine")
    for key in ("ratio", "ratio_end"):
        if not 0 <= getattr(cfg.mask, key) < 1:
            raise ConfigError(f"mask.{key}: must be in [0, 1)")
    masked = cfg.mask.ratio > 0 or cfg.mask.ratio_end > 0 and cfg.mask.schedule != "constant"
    if masked and not cfg.model.use_decoder:
        raise ConfigError("mask.ratio > 0 needs model.use_decoder: true (the DiT baseline trains unmasked)")
    if masked and cfg.model.arch == "ddpm_unet":
        raise ConfigError("model.arch ddpm_unet trains on whole images: set mask.ratio 0")
    if cfg.model.route.ratio > 0 and cfg.model.arch == "ddpm_unet":
        raise ConfigError("model.route: token routing needs a transformer backbone, not ddpm_unet")
    if cfg.model.arch in ARCHS:
        try:
            cfg.model.route.check(cfg.model.depth or ARCHS[cfg.model.arch][0])
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if not 0 < train_cfg.activation_memory_budget <= 1:
        raise ConfigError(f"train.activation_memory_budget: {train_cfg.activation_memory_budget} must be in (0, 1]")
    check_compile_scope(cfg)
    if train_cfg.activation_memory_budget < 1 and train_cfg.compile == "none":
        raise ConfigError("train.activation_memory_budget < 1 is a torch.compile option: set train.compile to one of "
                          "net | blocks | step, or use model.grad_checkpointing in eager mode")
    if cfg.model.grad_checkpointing not in CHECKPOINTING:
        raise ConfigError(f"model.grad_checkpointing: {cfg.model.grad_checkpointing!r} is not one of "
                          f"{' | '.join(CHECKPOINTING)}")
    if cfg.model.residual_bf16 and train_cfg.mixed_precision != "bf16":
        raise ConfigError("model.residual_bf16 needs train.mixed_precision bf16")
    if (problem := cfg.grid.sampling.problem()) is not None:
        raise ConfigError(f"grid.sampling.{problem}")
    if cfg.model.precond not in ("edm", "vp"):
        raise ConfigError(f"model.precond: {cfg.model.precond!r} is not one of edm | vp")
    check_repr_loss(cfg)


REPR_KINDS = ("none", "dispersive", "sra")


def check_repr_loss(cfg: "Config") -> None:
    """loss.repr: a known kind with valid parameters, a transformer backbone, and a micro-batch of ≥ 2 samples for
    the dispersive loss where it is known here (train.batch_gpu, else train.batch_size; the trainer checks the
    per-process micro-batch once the number of processes is known)."""
    rep = cfg.loss.repr
    if rep.kind not in REPR_KINDS:
        raise ConfigError(f"loss.repr.kind: {rep.kind!r} is not one of {' | '.join(REPR_KINDS)}")
    disp, sra = rep.dispersive, rep.sra
    checks = [("dispersive.weight", disp.weight, disp.weight >= 0, "a finite number ≥ 0"),
              ("dispersive.temperature", disp.temperature, disp.temperature > 0, "a finite number > 0"),
              ("dispersive.block_fraction", disp.block_fraction, 0 < disp.block_fraction <= 1, "in (0, 1]"),
              ("sra.weight", sra.weight, sra.weight >= 0, "a finite number ≥ 0"),
              ("sra.student_block_fraction", sra.student_block_fraction, 0 < sra.student_block_fraction <= 1,
               "in (0, 1]"),
              ("sra.teacher_block_fraction", sra.teacher_block_fraction, 0 < sra.teacher_block_fraction <= 1,
               "in (0, 1]"),
              ("sra.max_time_shift", sra.max_time_shift, 0 <= sra.max_time_shift <= 1, "in [0, 1]"),
              ("sra.smooth_l1_beta", sra.smooth_l1_beta, sra.smooth_l1_beta > 0, "a finite number > 0"),
              ("sra.decay_start_kimg", sra.decay_start_kimg, sra.decay_start_kimg >= 0, "a finite number ≥ 0"),
              ("sra.decay_kimg", sra.decay_kimg, sra.decay_kimg > 0, "a finite number > 0")]
    for key, value, ok, allowed in checks:
        if not (math.isfinite(value) and ok):
            raise ConfigError(f"loss.repr.{key}: {value} must be {allowed}")
    if rep.kind == "none":
        return
    if cfg.model.arch not in ARCHS:
        raise ConfigError(f"loss.repr.kind {rep.kind} reads a transformer block's output; model.arch "
                          f"{cfg.model.arch} has none: use loss.repr.kind none")
    if rep.kind == "dispersive" and (cfg.train.batch_gpu or cfg.train.batch_size) < 2:
        raise ConfigError("loss.repr.kind dispersive compares the samples of a micro-batch: it needs ≥ 2 per "
                          "process (train.batch_gpu / train.batch_size)")


def check_compile_scope(cfg: "Config") -> None:
    from training.compile_scope import SCOPES

    scope = cfg.train.compile
    if scope not in SCOPES:
        before = {"True": "step", "False": "none"}  # the boolean this key was before the scopes existed
        hint = f" (a boolean {scope.lower()} meant {before[scope]})" if scope in before else ""
        raise ConfigError(f"train.compile: {scope!r} is not one of {' | '.join(SCOPES)}{hint}")
    if scope == "blocks" and cfg.model.arch == "ddpm_unet":
        raise ConfigError("train.compile blocks compiles transformer blocks; model.arch ddpm_unet has none: use net")


def check_posthoc_ema(posthoc: PosthocEMAConfig) -> None:
    for sigma_rel in posthoc.sigma_rels:
        if not 0 < sigma_rel < MAX_SIGMA_REL:
            raise ConfigError(f"train.posthoc_ema.sigma_rels: {sigma_rel} is not in (0, {MAX_SIGMA_REL:.4f}), the "
                              "lengths a power-function EMA can have (EDM2 uses 0.05 and 0.10)")
    if len(set(posthoc.sigma_rels)) != len(posthoc.sigma_rels):
        raise ConfigError(f"train.posthoc_ema.sigma_rels: {list(posthoc.sigma_rels)} repeats a value")
    if posthoc.sigma_rels and posthoc.snapshot_kimg <= 0:
        raise ConfigError("train.posthoc_ema.snapshot_kimg: must be positive when sigma_rels are tracked "
                          f"(got {posthoc.snapshot_kimg})")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))
