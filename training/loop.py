"""The training loop: masked pretraining and unmasking finetune are the same loop with different configs.

Progress is counted in images. Re-running the same command resumes from the newest checkpoint in the run
directory; `init_from` starts a fresh run from another run's weights and EMA (finetune).
"""

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object
from tqdm import tqdm

from dataio.autoencoder import Decoder
from dataio.image_io import grid_image, save_png_atomic, to_uint8
from dataio.training_data import TrainingData, build_training_data, check_matches_model
from diffusion.dispersive import Dispersive, repr_block_index
from diffusion.loss import MaskDiTLoss
from diffusion.self_alignment import SelfAlignment, alignment_weight
from diffusion.mask_schedule import mask_ratio_at
from diffusion.generation import generate, labels_for_seeds
from diffusion.step_draws import draw_step, micro_batch_offset, step_generator
from diffusion.strategies import build_strategy
from diffusion.telemetry import SigmaTelemetry
from diffusion.network import build_network
from models.build import count_parameters
from models.ema_profiles import classic_beta
from training import checkpoint as ckpt
from training.checkpoint import Progress, TrainedParts
from training.compile_scope import CompiledForward
from training.config import Config, ConfigError, to_yaml
from training.ema import EMA, PowerEMAs
from training.fp8 import convert_to_fp8, fp8_refusal
from training.objective import TrainingObjective
from training.plots import plot_telemetry
from training.run_log import RunLog
from utils.atomic import DiskFullError, UnwritableError, atomic_write_text, check_writable
from utils.distributed import release_process_group


class NonFiniteError(RuntimeError):
    """The loss or the weights stopped being finite; the run stops before writing anything from that state."""


class BatchLayout(NamedTuple):
    batch_gpu: int  # per-process micro-batch
    accum_rounds: int  # micro-batches per optimizer step and process


def batch_layout(batch_size: int, batch_gpu: int | None, num_processes: int) -> BatchLayout:
    """The per-process micro-batch and accumulation rounds that keep the global batch exact."""
    per_process, rem = divmod(batch_size, num_processes)
    if rem:
        raise ConfigError(f"train.batch_size {batch_size} is not divisible by {num_processes} processes")
    batch_gpu = batch_gpu or per_process
    rounds, rem = divmod(per_process, batch_gpu)
    if rem:
        raise ConfigError(f"train.batch_gpu {batch_gpu} does not divide the per-process batch {per_process}")
    return BatchLayout(batch_gpu, rounds)


def crossed(prev_nimg: int, cur_nimg: int, every_kimg: float) -> bool:
    """True when progress passed a multiple of every_kimg during the last step."""
    every = int(every_kimg * 1000)
    return every > 0 and cur_nimg // every > prev_nimg // every


def crossed_point(prev_nimg: int, cur_nimg: int, points_kimg: list[float]) -> bool:
    """True when progress passed one of the points (kimg) during the last step: prev < point ≤ cur."""
    return any(prev_nimg < round(kimg * 1000) <= cur_nimg for kimg in points_kimg)


def crossed_minutes(prev_seconds: float, cur_seconds: float, every_minutes: float) -> bool:
    """True when the training clock passed a multiple of every_minutes during the last step."""
    every = every_minutes * 60
    return every > 0 and cur_seconds // every > prev_seconds // every


# ----------------------------------------------------------------------------
# Set-up.


def make_accelerator(cfg: Config, run_dir: Path) -> Accelerator:
    # cpu=True without CUDA: a torchrun launch on a CPU machine then runs distributed over gloo.
    # gradient_as_bucket_view: gradients live in DDP's buckets, saving one gradient-sized copy per step
    ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True, bucket_cap_mb=cfg.train.ddp_bucket_mb)
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, log_with="tensorboard",
                              project_dir=str(run_dir), cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.train.tf32
        torch.backends.cudnn.allow_tf32 = cfg.train.tf32
    return accelerator


def make_optimizer(params: list[torch.nn.Parameter], cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the network's parameters (then those of SRA's projection head, when it trains one)."""
    o = cfg.optim
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                             fused=fused)


def attach_optimal_loss(strategy, data_cfg, log: RunLog, max_latents: int = 8192) -> None:
    """Give a strategy that needs it the irreducible loss J*(σ) of this run's training data on its σ bins,
    estimated once per dataset and cached beside the data (a resumed run has it in its strategy state)."""
    from dataio.training_data import optimal_loss_reference
    from diffusion.optimal_loss import load_or_estimate

    sigmas = strategy.bins.centers.exp()  # (B,) the strategy's bin centres
    images, description, cache_base = optimal_loss_reference(data_cfg, max_latents)
    cache = cache_base.with_name(f"{cache_base.name}-J-{len(sigmas)}bins-{float(sigmas[0]):.4g}-{float(sigmas[-1]):.4g}.json")
    j_star = load_or_estimate(cache, lambda: images, sigmas, num_queries=512, num_candidates=8192)
    strategy.set_optimal_loss(sigmas, j_star)
    log.print(f"J*(σ) of {description} (cached in {cache}): " +
              ", ".join(f"σ {float(s):.3g}: {float(j):.4f}" for s, j in list(zip(sigmas, j_star))[::6]))


# ----------------------------------------------------------------------------
# One optimizer step.


class Trainer:
    """One optimizer step. `objective` is the prepared (DDP-wrapped when distributed) TrainingObjective, and
    `train_objective` what the step calls (the same, compiled when train.compile); `parts` hold the bare network,
    its EMA, the prepared optimizer and the strategy (what a checkpoint saves)."""

    def __init__(self, cfg: Config, accelerator: Accelerator, objective, parts: TrainedParts, data: TrainingData,
                 layout: BatchLayout):
        self.cfg, self.accelerator, self.objective, self.parts = cfg, accelerator, objective, parts
        self.train_objective = compiled_forward(objective, accelerator, cfg)
        self.net, self.ema, self.optimizer, self.strategy = parts.net, parts.ema, parts.optimizer, parts.strategy
        self.self_alignment = parts.self_alignment
        self.power_emas = parts.power_emas
        self.loss_fn = accelerator.unwrap_model(objective).loss
        self.data, self.batches = data, data.batches
        self.batch_gpu, self.accum_rounds = layout
        self.sums = torch.zeros(5, device=accelerator.device)  # loss, denoise, mae, repr, count since last log
        self.strategy_sums = None  # the strategy's loss_statistics since its last update (learning strategies)
        self.last_finite = (0, 0)  # (step, cur_nimg) at which the loss sums were last seen finite
        self.telemetry = SigmaTelemetry(accelerator.device)

    def learning_rate(self, cur_nimg: int) -> float:
        warmup_nimg = self.cfg.optim.warmup_kimg * 1000
        return self.cfg.optim.lr * (min(1.0, cur_nimg / warmup_nimg) if warmup_nimg > 0 else 1.0)

    def draws(self, step: int):
        """This step's random draws for the whole global batch (identical on every process)."""
        m, dev = self.cfg.model, self.accelerator.device
        gen = step_generator(self.cfg.train.seed, step, dev)
        return draw_step(self.strategy, gen, self.cfg.train.batch_size, (m.in_channels, m.resolution, m.resolution),
                         self.loss_fn.num_tokens, m.label_dropout if m.num_classes else 0.0, dev,
                         latent=self.data.decode_info["space"] == "latent", route=m.route.ratio > 0,
                         teacher=self.cfg.loss.repr.kind == "sra")

    def step(self, progress: Progress, mask_ratio: float) -> None:
        acc = self.accelerator
        step_draws = self.draws(progress.step)
        if self.self_alignment is not None:
            sra = self.cfg.loss.repr.sra
            self.self_alignment.set_weight(alignment_weight(sra.weight, progress.cur_nimg / 1000, sra.decay_start_kimg,
                                                            sra.decay_kimg))
        fetched = []  # this step's micro-batches (images, labels, draws), kept for a compile fallback's replay
        for round_idx in range(self.accum_rounds):
            offset = micro_batch_offset(round_idx, acc.process_index, acc.num_processes, self.batch_gpu)
            draws = step_draws.slice(offset, self.batch_gpu)
            images, labels = self.batches.next(draws.latent_noise, draws.copy_choice)
            fetched.append((images, labels if self.cfg.model.num_classes else None, draws))
            self.observe(self.micro_batch(fetched, mask_ratio))
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(progress.cur_nimg)
        if self.cfg.optim.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.objective.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.train_objective.verified = True  # the scope compiled and ran a whole step: no fallback from here
        progress.cur_nimg += self.cfg.train.batch_size
        progress.step += 1
        train_cfg = self.cfg.train
        self.ema.update(self.net, classic_beta(train_cfg.batch_size, progress.cur_nimg, train_cfg.ema_decay,
                                           train_cfg.ema_halflife_kimg, train_cfg.ema_rampup_ratio))
        if self.power_emas is not None:
            self.power_emas.update(self.net, progress.step)
        if self.strategy_sums is not None:
            # One all-reduce of per-bin sums per step (no host sync, ~1 KB): every rank applies the same global
            # statistics, so strategy states stay identical, and no sample-sized gather is needed.
            self.strategy.update_from_sums(acc.reduce(self.strategy_sums, reduction="sum"))
            self.strategy_sums = None

    def forward_backward(self, round_idx: int, images, labels, draws, mask_ratio: float):
        """One micro-batch: forward, backward of its share of the step's mean loss (DDP synchronises the
        gradients at the last round only). -> its loss terms."""
        sync = round_idx == self.accum_rounds - 1
        with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.objective):
            terms = self.train_objective(images, labels, draws, mask_ratio)
            self.accelerator.backward(terms.total.mean() / self.accum_rounds)
        return terms

    def micro_batch(self, fetched: list, mask_ratio: float):
        """The newest of this step's micro-batches. When the compile scope fails to compile (only possible before
        the first step completes), the gradients of the step so far are dropped, the scope falls back
        (training/compile_scope.py) and the step's micro-batches are replayed on the same inputs: the step ends
        exactly as if it had started under the fallback scope. -> the newest micro-batch's loss terms."""
        replay_from = len(fetched) - 1
        while True:
            try:
                for round_idx in range(replay_from, len(fetched)):
                    terms = self.forward_backward(round_idx, *fetched[round_idx], mask_ratio)
                return terms
            except Exception as err:
                if not self.train_objective.can_fall_back(err):
                    raise
                self.train_objective.fall_back(err)
                self.optimizer.zero_grad(set_to_none=True)
                replay_from = 0

    @torch.no_grad()
    def observe(self, terms) -> None:
        """Accumulate a micro-batch's loss sums, σ telemetry and strategy statistics on the device: no host sync.
        A non-finite loss anywhere turns the loss sums non-finite; that is checked at log and checkpoint time."""
        count = torch.ones_like(terms.total).sum()  # (,) on the device, without a host-to-device copy
        self.sums += torch.stack([terms.total.sum(), terms.denoise.sum(), terms.mae.sum(), terms.repr.sum(), count])
        sigma = terms.sigma.detach()
        self.telemetry.observe(sigma, terms.raw_denoise)
        stats = self.strategy.loss_statistics(sigma, terms.raw_denoise)
        if stats is not None:
            self.strategy_sums = stats if self.strategy_sums is None else self.strategy_sums + stats

    def check_finite(self, progress: Progress) -> None:
        """Collective: stop (NonFiniteError, one line) when any process saw a non-finite loss since the last
        check. A single bad batch stops the run too: by the time it is seen, the optimizer has already applied
        it, and the newest checkpoint is the last healthy state to resume from once the cause is fixed."""
        bad = torch.tensor(float(not torch.isfinite(self.sums).all()), device=self.sums.device)
        if self.accelerator.reduce(bad, reduction="sum").item() > 0:
            step, nimg = self.last_finite
            raise NonFiniteError(
                f"the training loss became non-finite between step {step} ({nimg / 1000:.3f} kimg) and step "
                f"{progress.step} ({progress.cur_nimg / 1000:.3f} kimg); likely causes: a learning rate too high "
                f"(optim.lr={self.cfg.optim.lr:g}), fp16 overflow (train.mixed_precision="
                f"{self.cfg.train.mixed_precision}), or a corrupt data record; nothing was written from this "
                "state: fix the cause and re-run to resume from the newest checkpoint")
        self.last_finite = (progress.step, progress.cur_nimg)

    def take_means(self, progress: Progress) -> dict:
        """Losses averaged over all processes since the previous call (one collective, one host sync)."""
        self.check_finite(progress)
        sums = self.accelerator.reduce(self.sums.clone(), reduction="sum")
        self.sums.zero_()
        count = max(sums[4].item(), 1.0)
        means = {"loss": sums[0].item() / count, "loss_denoise": sums[1].item() / count,
                 "loss_mae": sums[2].item() / count}
        if self.cfg.loss.repr.kind != "none":
            means[f"loss_{self.cfg.loss.repr.kind}"] = sums[3].item() / count  # the term before its weight
        return means


# ----------------------------------------------------------------------------
# Periodic outputs.


@torch.no_grad()
def write_grid(ema: EMA, cfg: Config, decoder: Decoder, path: Path, device) -> None:
    """EMA samples through the one generation path (diffusion/generation.py): image i uses seed i and class
    i mod classes (one class per column), so `generate.py --ckpt <snapshot> --num-samples N` with the flags of
    grid.sampling reproduces the grid."""
    seeds, classes = list(range(cfg.grid.num_images)), cfg.model.num_classes
    labels = labels_for_seeds(seeds, classes)
    images = torch.cat([batch for _, _, batch in generate(ema.net, decoder, seeds, labels, cfg.grid.sampling,
                                                           len(seeds), device)])
    save_png_atomic(grid_image(to_uint8(images), cols=classes or None), path)


def parameter_checksum(net: torch.nn.Module) -> float:
    """Sum of all parameters in float64: equal on every rank unless replicas diverged."""
    return float(sum(p.detach().double().sum() for p in net.parameters()))


def all_finite(net: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in net.state_dict().values() if t.is_floating_point())


def check_weights_finite(trainer: "Trainer", progress: Progress, what: str) -> None:
    """Never write a checkpoint or snapshot whose weights or EMA are not finite (raises NonFiniteError).
    Local, no collective: snapshot times follow each rank's own training clock."""
    averages = [trainer.ema.net, *(trainer.power_emas.nets if trainer.power_emas is not None else [])]
    if not all(all_finite(net) for net in [trainer.net, *averages]):
        raise NonFiniteError(f"step {progress.step}: the model or EMA weights are not finite; the {what} was not "
                             "written (the newest checkpoint on disk is the last healthy one)")


def save_checkpoint(run_dir: Path, cfg: Config, trainer: "Trainer", progress: Progress) -> Path | None:
    """Collective (RNG states and parameter checksums are gathered from every rank); rank 0 writes."""
    trainer.check_finite(progress)  # collective: every rank's losses
    check_weights_finite(trainer, progress, "checkpoint")
    rng = gather_object([ckpt.capture_rng()])
    acc = trainer.accelerator
    checksums = gather_object([parameter_checksum(trainer.net)])
    if not acc.is_main_process:
        return None
    if len(set(checksums)) > 1:
        print(f"warning: parameters differ across processes at step {progress.step}: {checksums}", flush=True)
    state = ckpt.training_state(trainer.parts, acc.scaler, trainer.batches.state_dict(), progress, rng, checksums, cfg)
    return ckpt.write_checkpoint(run_dir, progress.step, trainer.net.state_dict(), state, trainer.ema.state_dict(),
                                 ckpt.snapshot_meta(cfg, trainer.data.decode_info, progress),
                                 cfg.train.keep_checkpoints)


# ----------------------------------------------------------------------------
# Entry point.


def train(cfg: Config, init_from: str | None = None, stop_after_kimg: float | None = None,
          stop_after_min: float | None = None) -> Path:
    """Train until total_kimg, or until stop_after_kimg / stop_after_min (wall-clock of this invocation),
    leaving a checkpoint to resume from; returns the run dir."""
    run_dir = Path(cfg.run_dir or Path("results") / cfg.name)
    accelerator = make_accelerator(cfg, run_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    layout = batch_layout(cfg.train.batch_size, cfg.train.batch_gpu, world)
    if cfg.train.fp8 and (refusal := fp8_refusal(accelerator.device, cfg.train.mixed_precision)):
        raise ConfigError(refusal)
    if init_from is not None and not Path(init_from).exists():
        raise FileNotFoundError(f"--init-from {init_from}: no such checkpoint or snapshot")
    lock = take_run_lock(run_dir, accelerator, run_subfolders(cfg))  # noqa: F841 - held (open) for the whole run
    loaded = ckpt.load_newest_healthy(run_dir, warn=print if accelerator.is_main_process else None)
    run_state = loaded.state if loaded is not None else None
    data = build_training_data(cfg.data, cfg.train.seed, rank, world, layout.batch_gpu, accelerator.device,
                               run_state["data"] if run_state is not None else None)
    check_matches_model(data, cfg.model)
    check_outputs_can_be_made(cfg, data, accelerator)

    if accelerator.is_main_process:
        ckpt.remove_stale_temp_files(run_dir)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        truncate_stats(run_dir, run_state["cur_nimg"] if run_state is not None else 0)
    accelerator.wait_for_everyone()
    log = RunLog(run_dir, accelerator)
    torch.manual_seed(cfg.train.seed * 7919 + rank)

    parts = build_model_parts(cfg, accelerator.device, log.print)
    progress = Progress()
    if getattr(parts.strategy, "needs_optimal_loss", False) and loaded is None:
        with accelerator.main_process_first():  # rank 0 estimates and caches J*, the others read the cache
            attach_optimal_loss(parts.strategy, cfg.data, log)
    if loaded is not None:
        ckpt.restore(loaded, parts, accelerator.scaler, progress)
        log.print(f"resuming from {loaded.directory} at {progress.cur_nimg / 1000:.1f} kimg")
    elif init_from is not None:
        log.print("initialised with " + ckpt.init_weights_from(init_from, parts))

    trainer = assemble_trainer(cfg, accelerator, parts, data, layout)
    accelerator.init_trackers("tensorboard")
    log.print(f"{data.description}; {count_parameters(parts.net) / 1e6:.2f} M parameters; "
              f"{world} process(es) x batch_gpu {layout.batch_gpu} x {layout.accum_rounds} rounds = "
              f"batch {cfg.train.batch_size}; strategy {parts.strategy.name}; run dir {run_dir}")
    if loaded is not None and not ckpt.restore_rng_of_rank(loaded.state, rank, world):
        log.print(f"resume: checkpoint has RNG states of {len(loaded.state['rng'])} processes, this run has "
                  f"{world}; continuing with fresh RNG streams")
    try:
        run_steps(cfg, run_dir, trainer, progress, log, stop_after_kimg, stop_after_min)
    finally:
        shut_down(accelerator)
    return run_dir


def build_model_parts(cfg: Config, device, log=print) -> TrainedParts:
    """The network, EMA, optimizer and strategy, freshly initialised on `device` (train.py and the throughput
    benchmark build the same)."""
    net = build_network(cfg.model).to(device).train()
    ema = EMA(net)  # before any fp8 conversion: the EMA copy stays in plain linears
    if cfg.train.fp8:
        log(f"train.fp8: {convert_to_fp8(net)} block linears train in float8 (torchao)")
    self_alignment = build_self_alignment(cfg, net.backbone.spec, device)
    head = list(self_alignment.parameters()) if self_alignment is not None else []
    optimizer = make_optimizer([*net.parameters(), *head], cfg, device)
    strategy = build_strategy(cfg.diffusion.strategy.name, dict(cfg.diffusion.strategy.params), cfg.model.sigma_data)
    sigma_rels = cfg.train.posthoc_ema.sigma_rels
    power_emas = PowerEMAs(net, sigma_rels) if sigma_rels else None
    return TrainedParts(net, ema, optimizer, strategy, power_emas, self_alignment)


def build_self_alignment(cfg: Config, spec, device) -> SelfAlignment | None:
    """loss.repr.kind sra (diffusion/self_alignment.py) for the built backbone's `spec` (depth, width): its
    projection head, freshly initialised, or None."""
    if cfg.loss.repr.kind != "sra":
        return None
    sra = cfg.loss.repr.sra
    return SelfAlignment(spec.width, repr_block_index(sra.student_block_fraction, spec.depth),
                         repr_block_index(sra.teacher_block_fraction, spec.depth), sra.max_time_shift,
                         sra.smooth_l1_beta, sra.weight).to(device)


def assemble_trainer(cfg: Config, accelerator: Accelerator, parts: TrainedParts, data: TrainingData,
                     layout: BatchLayout) -> Trainer:
    """Wrap the built (and possibly restored) parts into the objective, prepare it (DDP, autocast) and return
    the Trainer (which compiles it when asked). benchmarks/throughput.py times exactly this Trainer's step."""
    spec = parts.net.backbone.spec
    if parts.self_alignment is not None:
        parts.self_alignment.attach_teacher(parts.ema.net)  # the classic EMA is SRA's teacher
    loss_fn = MaskDiTLoss(spec.patch_size, (spec.resolution // spec.patch_size) ** 2, cfg.mask.mae_weight,
                          spec.num_classes if spec.num_classes else None, build_dispersive(cfg, layout, spec.depth),
                          parts.self_alignment)
    objective = TrainingObjective(parts.net, loss_fn, parts.strategy.to(accelerator.device))
    objective, optimizer = accelerator.prepare(objective, parts.optimizer)
    return Trainer(cfg, accelerator, objective, dataclasses.replace(parts, optimizer=optimizer), data, layout)


def build_dispersive(cfg: Config, layout: BatchLayout, depth: int) -> Dispersive | None:
    """loss.repr (diffusion/dispersive.py) for this run, or None; refuses a per-process micro-batch below 2, where
    no pair of samples exists to disperse (the config check cannot know the number of processes)."""
    if cfg.loss.repr.kind != "dispersive":
        return None
    if layout.batch_gpu < 2:
        raise ConfigError(f"loss.repr.kind dispersive: the per-process micro-batch is {layout.batch_gpu}; it needs "
                          "≥ 2 samples to compare (raise train.batch_gpu or use fewer processes)")
    disp = cfg.loss.repr.dispersive
    return Dispersive(disp.weight, disp.temperature, repr_block_index(disp.block_fraction, depth))


def compiled_forward(objective, accelerator: Accelerator, cfg: Config) -> CompiledForward:
    """The step's forward under train.compile (training/compile_scope.py: none | net | blocks | step)."""
    # < 1: the partitioner recomputes cheap activations in backward to keep this share of them saved
    torch._functorch.config.activation_memory_budget = cfg.train.activation_memory_budget
    return CompiledForward(objective, accelerator.unwrap_model(objective), cfg.train.compile,
                           cfg.train.compile_backend, cfg.train.compile_strict,
                           print if accelerator.is_main_process else None)


def run_subfolders(cfg: Config) -> list[str]:
    """The folders a run writes besides its top level (posthoc/ only when it tracks power EMAs: its presence
    tells the post-hoc tools that a run has them)."""
    return ["checkpoints", "snapshots", "tensorboard"] + ["posthoc"] * bool(cfg.train.posthoc_ema.sigma_rels)


def take_run_lock(run_dir: Path, accelerator, subfolders: list[str]):
    """Rank 0 checks that the run directory and its subfolders can be written (one line naming the one that
    cannot: permissions, a full or read-only disk, a file in the way) and locks it (training/checkpoint.py);
    every rank learns the outcome, so a bad run directory or a second copy of a command stops all ranks with one
    line, before any log, event or stats file is opened. -> the open lock file (rank 0) or None."""
    from accelerate.utils import broadcast_object_list

    lock, error = None, None
    if accelerator.is_main_process:
        try:
            check_writable([run_dir, *(run_dir / name for name in subfolders)])
            lock = ckpt.lock_run_dir(run_dir)
        except (ckpt.RunLockedError, DiskFullError, UnwritableError) as err:
            error = (type(err).__name__, str(err))
    error = broadcast_object_list([error])[0] if accelerator.num_processes > 1 else error
    if error is not None:
        kind = {"DiskFullError": DiskFullError, "UnwritableError": UnwritableError}.get(error[0], ckpt.RunLockedError)
        raise kind(error[1])
    return lock


def truncate_stats(run_dir: Path, cur_nimg: int) -> None:
    """A resumed run repeats the steps after its checkpoint: drop their stats.jsonl rows (kimg > checkpoint)."""
    path = run_dir / "stats.jsonl"
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["kimg"] * 1000 <= cur_nimg + 1e-6]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def check_outputs_can_be_made(cfg: Config, data: TrainingData, accelerator) -> None:
    """Load now what periodic outputs will need (the VAE that decodes sample grids of a latent run), so a
    missing one stops the run before any work instead of at the first grid."""
    if accelerator.is_main_process and cfg.train.sample_kimg > 0 and data.decode_info["space"] == "latent":
        try:
            Decoder(data.decode_info, accelerator.device)
        except Exception as err:  # noqa: BLE001 - any loading failure is reported as one line
            raise FileNotFoundError(f"train.sample_kimg > 0 needs the autoencoder {data.decode_info.get('vae')} to "
                                    f"decode sample grids, and it cannot be loaded ({str(err).splitlines()[0]}); "
                                    "make it available or set train.sample_kimg=0") from None


def shut_down(accelerator: Accelerator) -> None:
    """Close the trackers (tensorboard's writer thread) and the process group before the interpreter exits."""
    accelerator.end_training()
    release_process_group()


TIME_CHECK_STEPS = 16  # several processes agree on --stop-after-min every this many steps (a collective + host sync)


def out_of_time(accelerator, start: float, limit_min: float | None, step: int) -> bool:
    """One process reads the host clock every step (no sync). Several agree (max over processes) every
    TIME_CHECK_STEPS steps, so they stop after the same step and the steps in between need no host sync."""
    if limit_min is None:
        return False
    over = time.time() - start > limit_min * 60
    if accelerator.num_processes == 1:
        return over
    if step % TIME_CHECK_STEPS:
        return False
    over = torch.tensor(float(over), device=accelerator.device)
    return bool(accelerator.reduce(over, reduction="sum").item() > 0)


def run_steps(cfg: Config, run_dir: Path, trainer: Trainer, progress: Progress, log: RunLog,
              stop_after_kimg: float | None, stop_after_min: float | None) -> None:
    train_cfg, acc = cfg.train, trainer.accelerator
    start = time.time()
    total_nimg = int(train_cfg.total_kimg * 1000)
    stop_nimg = min(total_nimg, int(stop_after_kimg * 1000)) if stop_after_kimg is not None else total_nimg
    bar = tqdm(total=total_nimg, initial=progress.cur_nimg, unit="img", unit_scale=True, dynamic_ncols=True,
               disable=not acc.is_main_process, mininterval=2.0)
    tick_time, tick_nimg = time.time(), progress.cur_nimg
    outputs = PeriodicOutputs(cfg, run_dir, trainer, log)
    clock = time.time()  # start of the current stretch of training-clock time
    while progress.cur_nimg < stop_nimg:
        prev, prev_seconds = progress.cur_nimg, progress.train_seconds
        mask_ratio = mask_ratio_at(prev / total_nimg, cfg.mask.schedule, cfg.mask.ratio, cfg.mask.ratio_end)
        trainer.step(progress, mask_ratio)
        bar.update(progress.cur_nimg - prev)
        done = progress.cur_nimg >= stop_nimg or out_of_time(acc, start, stop_after_min, progress.step)
        if crossed(prev, progress.cur_nimg, train_cfg.log_kimg) or done:
            elapsed = time.time() - tick_time
            stats = {"kimg": progress.cur_nimg / 1000, "step": progress.step, **trainer.take_means(progress),
                     "lr": trainer.learning_rate(prev), "mask_ratio": mask_ratio,
                     "img_per_s": (progress.cur_nimg - tick_nimg) / max(elapsed, 1e-9),
                     "train_min": (progress.train_seconds + time.time() - clock) / 60,
                     **{f"strategy/{k}": v for k, v in trainer.strategy.report().items()}}
            if torch.cuda.is_available():
                stats["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            outputs.sigma_bins = trainer.telemetry.summary(acc, trainer.strategy)
            log.stats({**stats, "sigma_bins": outputs.sigma_bins}, step=progress.cur_nimg)
            log.print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in stats.items() if not k.startswith("strategy/")))
            tick_time, tick_nimg = time.time(), progress.cur_nimg
        progress.train_seconds += time.time() - clock  # the clock stops while grids and checkpoints are written
        outputs.write(progress, prev, prev_seconds, done)
        if done:
            break
        clock = time.time()
    bar.close()


class PeriodicOutputs:
    """Sample grids (+ σ telemetry plots), EMA snapshots (by images or by training-clock minutes), post-hoc EMA
    snapshots and checkpoints, each when its interval was crossed during the last step."""

    def __init__(self, cfg: Config, run_dir: Path, trainer: Trainer, log: RunLog):
        self.cfg, self.run_dir, self.trainer, self.log = cfg, run_dir, trainer, log
        self.decoder = None  # loaded on first use, on the main process only
        self.sigma_bins = None  # the latest per-σ-bin telemetry, plotted with each sample grid

    def write(self, progress: Progress, prev_nimg: int, prev_seconds: float, done: bool) -> None:
        """Snapshot, checkpoint, then the grid: a kill between two writes never loses a snapshot (the resumed run
        redoes the step), and a grid that fails (its VAE) never costs progress."""
        train_cfg, trainer, acc = self.cfg.train, self.trainer, self.trainer.accelerator
        by_images = crossed(prev_nimg, progress.cur_nimg, train_cfg.snapshot_kimg) or \
            crossed_point(prev_nimg, progress.cur_nimg, train_cfg.snapshot_at_kimg)
        by_minutes = crossed_minutes(prev_seconds, progress.train_seconds, train_cfg.snapshot_minutes)
        if acc.is_main_process and (by_images or by_minutes):
            check_weights_finite(trainer, progress, "snapshot")
            ckpt.write_snapshot(self.run_dir, progress.cur_nimg / 1000, trainer.ema.state_dict(),
                                ckpt.snapshot_meta(self.cfg, trainer.data.decode_info, progress),
                                train_cfg.keep_snapshots)
        if acc.is_main_process and trainer.power_emas is not None and (
                crossed(prev_nimg, progress.cur_nimg, train_cfg.posthoc_ema.snapshot_kimg)
                or progress.cur_nimg >= train_cfg.total_kimg * 1000):
            check_weights_finite(trainer, progress, "post-hoc EMA snapshot")
            ckpt.write_posthoc_snapshots(self.run_dir, trainer.power_emas,
                                         ckpt.snapshot_meta(self.cfg, trainer.data.decode_info, progress),
                                         progress.step, train_cfg.batch_size)
        if crossed(prev_nimg, progress.cur_nimg, train_cfg.checkpoint_kimg) or done:
            path = save_checkpoint(self.run_dir, self.cfg, trainer, progress)
            if path is not None:
                self.log.print(f"checkpoint {path}")
        if acc.is_main_process and train_cfg.sample_kimg > 0 and (crossed(prev_nimg, progress.cur_nimg, train_cfg.sample_kimg) or done):
            self.write_grid(progress)

    def write_grid(self, progress: Progress) -> None:
        trainer, acc = self.trainer, self.trainer.accelerator
        tag = f"{progress.cur_nimg // 1000:06d}kimg"
        if self.decoder is None:
            self.decoder = Decoder(trainer.data.decode_info, acc.device)
        write_grid(trainer.ema, self.cfg, self.decoder, self.run_dir / "samples" / f"grid-{tag}.png", acc.device)
        if self.sigma_bins is not None:
            plot_telemetry(self.sigma_bins, f"{trainer.strategy.name} at {progress.cur_nimg / 1000:.1f} kimg",
                           self.run_dir / "samples" / f"sigma-{tag}.png")
