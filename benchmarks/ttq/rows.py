"""The rows of the time-to-quality benchmark (benchmarks/ttq/): what each row changes in the
training and evaluation config, and which pairs the report compares."""

from dataclasses import dataclass, field


@dataclass
class Row:
    label: str
    train_overrides: list[str]
    eval_overrides: list[str] = field(default_factory=list)
    trains_as: str | None = None  # an evaluation variant: scores the snapshots of this row's run (same training)


DIT = ["model.use_decoder=false", "mask.ratio=0"]
# TREAD (REFERENCE.md §5): half the tokens bypass blocks 2..B−4; on the 6-block embedded default that is 2..2,
# so the benchmark routes blocks 1..3 (the middle half, the released DiT-B/2 config's share of 7/12 rounded).
TREAD = ["model.route.ratio=0.5", "model.route.start=1", "model.route.end=3"]

# Every row trains on its protocol's pinned recipe (--recipe, benchmarks/fmnist_recipes.py) unless the row says
# otherwise: readme-v1 (batch 32, lr 6e-4, 1 kimg warm-up, EMA half-life 5 kimg, 6 × 192 MaskDiT) for the protocols up
# to 24.576 kimg, readme-v2 (the default after issue #33: 6 × 128, lr 2e-3) at the horizon, so committed results stay
# reproducible after the config file moves on. The seeds' own claims are tested where they were made: SpeeD and
# Min-SNR against uniform-t ε-loss DDPM training on the same DiT backbone.
ROWS = {
    "maskdit_edm": Row("MaskDiT 50% + EDM", []),
    "dit_edm": Row("DiT (no mask) + EDM", DIT),
    "dit_ddpm": Row("DiT + DDPM (uniform t, ε-loss)", [*DIT, "diffusion.strategy.name=ddpm_uniform"]),
    "dit_speed": Row("DiT + SpeeD", [*DIT, "diffusion.strategy.name=speed"]),
    "dit_min_snr": Row("DiT + Min-SNR-5 (uniform t)", [*DIT, "diffusion.strategy.name=min_snr",
                                                       "diffusion.strategy.params.sampling=ddpm_uniform"]),
    "dit_tread": Row("DiT + TREAD routing 50%", [*DIT, *TREAD]),
    "maskdit_tread": Row("MaskDiT 50% + TREAD routing 50% of the visible tokens", TREAD),
    "maskdit_speed": Row("MaskDiT + SpeeD", ["diffusion.strategy.name=speed"]),
    "maskdit_min_snr": Row("MaskDiT + Min-SNR-5", ["diffusion.strategy.name=min_snr"]),
    # Min-SNR-5 on DDPM's uniform t, as dit_min_snr trains: does the σ density under Min-SNR's weight matter on
    # MaskDiT too? (dit_min_snr has the lowest ln-FD area of every row, but a higher final FD)
    "maskdit_min_snr_uniform": Row("MaskDiT + Min-SNR-5 (uniform t)", [
        "diffusion.strategy.name=min_snr", "diffusion.strategy.params.sampling=ddpm_uniform"]),
    "maskdit_importance": Row("MaskDiT + importance (adaptive)", ["diffusion.strategy.name=importance"]),
    "maskdit_lp": Row("MaskDiT + learning progress (adaptive)", ["diffusion.strategy.name=learning_progress"]),
    "maskdit_excess": Row("MaskDiT + excess loss (adaptive, p/q)", ["diffusion.strategy.name=excess_loss"]),
    "maskdit_excess_sampling": Row("MaskDiT + excess loss (adaptive, sampling)", [
        "diffusion.strategy.name=excess_loss", "diffusion.strategy.params.keep_objective=false"]),
    # adaptive proposals on the best fixed objective (Min-SNR-5), keeping it by p/q weights: same objective as
    # maskdit_min_snr, fewer draws spent where Min-SNR's weight leaves almost nothing to learn
    "maskdit_min_snr_excess": Row("MaskDiT + Min-SNR-5 + excess loss (adaptive, p/q)", [
        "diffusion.strategy.name=excess_loss", "diffusion.strategy.params.min_snr_gamma=5"]),
    "maskdit_min_snr_importance": Row("MaskDiT + Min-SNR-5 + importance (adaptive, p/q)", [
        "diffusion.strategy.name=importance", "diffusion.strategy.params.min_snr_gamma=5"]),
    "maskdit_adaptive_weight": Row("MaskDiT + EDM2 learned loss weighting (adaptive)", [
        "diffusion.strategy.name=adaptive_weight"]),
    "maskdit_edm2_pixel": Row("MaskDiT + EDM2 pixel preset (P_mean −0.8, P_std 1.6)", [
        "diffusion.strategy.params.p_mean=-0.8", "diffusion.strategy.params.p_std=1.6"]),
    # The bf16 residual stream's quality A/B (training/config.py model.residual_bf16): compare these two with each
    # other over the image grid (a CPU without bf16 units runs them ~7x slower, so their img/s says nothing).
    "maskdit_bf16": Row("MaskDiT + EDM, bf16 autocast", ["train.mixed_precision=bf16"]),
    "maskdit_bf16_residual": Row("MaskDiT + EDM, bf16 autocast + bf16 residual stream", [
        "train.mixed_precision=bf16", "model.residual_bf16=true"]),
    # Representation regularization (issue #30): the dispersive loss (diffusion/dispersive.py; λ 0.5, τ 0.5, encoder
    # block depth // 4) and SRA (diffusion/self_alignment.py; the authors' SiT-XL settings scaled by depth), each on
    # the reference, on DiT as the papers train it, and on the best strategy
    "maskdit_dispersive": Row("MaskDiT + EDM + dispersive loss", ["loss.repr.kind=dispersive"]),
    "dit_dispersive": Row("DiT + EDM + dispersive loss", [*DIT, "loss.repr.kind=dispersive"]),
    "maskdit_min_snr_dispersive": Row("MaskDiT + Min-SNR-5 + dispersive loss", [
        "diffusion.strategy.name=min_snr", "loss.repr.kind=dispersive"]),
    "maskdit_sra": Row("MaskDiT + EDM + SRA", ["loss.repr.kind=sra"]),
    "dit_sra": Row("DiT + EDM + SRA", [*DIT, "loss.repr.kind=sra"]),
    "maskdit_min_snr_sra": Row("MaskDiT + Min-SNR-5 + SRA", [
        "diffusion.strategy.name=min_snr", "loss.repr.kind=sra"]),
    "unet_ddpm": Row("U-Net DDPM (ε, uniform t)", [
        "model.arch=ddpm_unet", "model.precond=vp", "mask.ratio=0", "model.unet_channels=32",
        "diffusion.strategy.name=ddpm_uniform", "optim.lr=2e-4", "optim.grad_clip=1"],
        ["sampling.sampler=ddpm", "sampling.num_steps=50", "sampling.clip_denoised=true"]),
    # the same U-Net snapshots sampled without clipping x̂0: is the row's FD a sampler artefact? (issue #12)
    "unet_ddpm_noclip": Row("U-Net DDPM, sampled without x̂0 clipping", [],
                            ["sampling.sampler=ddpm", "sampling.num_steps=50"], trains_as="unet_ddpm"),
}
REFERENCE_ROW, TARGET_ROW = "maskdit_edm", "dit_edm"
ADAPTIVE_ROWS = ("maskdit_importance", "maskdit_lp", "maskdit_excess", "maskdit_excess_sampling",
                 "maskdit_adaptive_weight", "maskdit_min_snr_excess", "maskdit_min_snr_importance")
FIXED_MASKDIT_ROWS = ("maskdit_edm", "maskdit_speed", "maskdit_min_snr", "maskdit_min_snr_uniform",
                      "maskdit_edm2_pixel")
# the pairs compared besides row-vs-reference and adaptive-vs-fixed: the seeds' own claims in their settings (DiT
# on uniform-t DDPM, TREAD), the diagnostics (bf16 residual, U-Net clipping), and Min-SNR-5's σ density (uniform t,
# as the Min-SNR paper and DiT + Min-SNR train, or log-normal)
CLAIM_PAIRS = (("dit_speed", "dit_ddpm"), ("dit_min_snr", "dit_ddpm"), ("dit_tread", "dit_edm"),
               ("maskdit_tread", "maskdit_edm"), ("maskdit_bf16_residual", "maskdit_bf16"),
               ("unet_ddpm", "unet_ddpm_noclip"), ("maskdit_min_snr_uniform", "maskdit_min_snr"),
               ("dit_min_snr", "maskdit_min_snr_uniform"), ("dit_min_snr", "maskdit_min_snr"),
               ("dit_dispersive", "dit_edm"), ("maskdit_min_snr_dispersive", "maskdit_min_snr"),
               ("dit_sra", "dit_edm"), ("maskdit_min_snr_sra", "maskdit_min_snr"), ("maskdit_sra", "maskdit_dispersive"))
# the rows of the README's short table: the reference, the claims that resolved, and the papers' own claims
SUMMARY_ROWS = ("maskdit_edm", "maskdit_min_snr", "maskdit_min_snr_importance", "maskdit_speed", "dit_edm", "dit_min_snr",
                "dit_tread")
# the plot's panels (small multiples, ≤ 6 lines each): one family of rows per column
PLOT_FAMILIES = {
    "MaskDiT: noise-level strategies": ("maskdit_edm", "maskdit_speed", "maskdit_min_snr", "maskdit_min_snr_uniform",
                                        "maskdit_min_snr_importance", "maskdit_min_snr_excess"),
    "DiT: the papers' own claims": ("dit_edm", "dit_ddpm", "dit_speed", "dit_min_snr"),
    "Token routing (TREAD) and masking": ("maskdit_edm", "maskdit_tread", "dit_edm", "dit_tread"),
    "Representation regularization, MaskDiT": ("maskdit_edm", "maskdit_dispersive", "maskdit_sra", "maskdit_min_snr",
                                               "maskdit_min_snr_dispersive", "maskdit_min_snr_sra"),
    "Representation regularization, DiT": ("dit_edm", "dit_dispersive", "dit_sra"),
}
# the speed-ups the papers claim, in training iterations to the baseline's FID (REFERENCE.md §2, §5): SpeeD ~3×
# and Min-SNR-γ 3.4× over uniform-t DDPM, TREAD 14× over DiT (at 400K iterations)
PAPER_SPEEDUPS = {("dit_speed", "dit_ddpm"): 3.0, ("dit_min_snr", "dit_ddpm"): 3.4, ("dit_tread", "dit_edm"): 14.0}
