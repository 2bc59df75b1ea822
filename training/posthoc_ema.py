"""Post-hoc EMA reconstruction from a run's power-function EMA snapshots (EDM2 §3.3; the mathematics is
models/ema_profiles.py, the snapshots are written by training: `<run>/posthoc/phema-<σ_rel>-<kimg>.safetensors`).

The result is an ordinary EMA snapshot (models/snapshot.py) that generate.py and eval_latent.py read like any
other; its metadata says how it was made ("ema": target, coefficients' count, relative profile residual).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models import ema_profiles as profiles
from models.snapshot import SUFFIX, META_KEY, SnapshotError, read_snapshot, save_snapshot

POSTHOC_DIR = "posthoc"


@dataclass(frozen=True)
class PowerSnapshot:
    """One stored power EMA: where, its γ (and σ_rel), the optimizer step it was taken after, the batch size."""

    path: Path
    sigma_rel: float
    gamma: float
    step: int
    batch_size: int


@dataclass(frozen=True)
class EMATarget:
    """The EMA to reconstruct: a power EMA of length `sigma_rel`, or the classic EMA (half-life with optional
    ramp-up, or a fixed per-step decay) that training/ema.py tracks."""

    sigma_rel: float | None = None
    halflife_kimg: float | None = None
    rampup_ratio: float | None = None
    decay: float | None = None

    def describe(self) -> str:
        if self.sigma_rel is not None:
            return f"power EMA sigma_rel {self.sigma_rel:g}"
        if self.decay is not None:
            return f"classic EMA decay {self.decay:g}/step"
        return f"classic EMA half-life {self.halflife_kimg:g} kimg" + (
            f", ramp-up {self.rampup_ratio:g}" if self.rampup_ratio is not None else "")

    def profile(self, end_step: int, num_steps: int, batch_size: int) -> np.ndarray:
        if self.sigma_rel is not None:
            return profiles.power_profile(profiles.sigma_rel_to_gamma(self.sigma_rel), end_step, num_steps)
        return profiles.classic_profile(batch_size, end_step, num_steps, self.decay, self.halflife_kimg,
                                        self.rampup_ratio)


class Reconstruction:
    """Coefficients over a run's snapshots for one target at one step, and the weights they combine to."""

    def __init__(self, snapshots: list[PowerSnapshot], coefficients: np.ndarray, residual: float,
                 target: EMATarget, step: int):
        self.snapshots, self.coefficients, self.residual = snapshots, coefficients, residual
        self.target, self.step = target, step

    def weights(self) -> tuple[dict, dict]:
        """-> (state dict, metadata): Σ_k x_k θ_k accumulated in float64, streamed one snapshot at a time."""
        total, meta = None, None
        for snap, coefficient in zip(self.snapshots, self.coefficients):
            state, meta = read_snapshot(snap.path)
            if total is None:
                total = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in state.items()}
            for key, value in state.items():
                total[key] += float(coefficient) * value.double()
        weights = {k: v.float() for k, v in total.items()}
        meta = {k: v for k, v in meta.items() if k != "posthoc_ema"}
        meta["kimg"] = self.step * self.snapshots[0].batch_size / 1000
        meta["ema"] = {"kind": "posthoc", "target": self.target.describe(), "sigma_rel": self.target.sigma_rel,
                       "step": self.step, "snapshots": len(self.snapshots), "profile_residual": self.residual}
        return weights, meta

    def network(self, device="cpu") -> tuple[torch.nn.Module, dict]:
        """-> (the reconstructed EMA network in eval mode, its metadata): what load_for_sampling returns."""
        from diffusion.network import build_network
        from models.build import load_matching

        weights, meta = self.weights()
        net = build_network(meta["model"])
        load_matching(net, weights, f"post-hoc EMA of {self.snapshots[-1].path.parent}")
        return net.eval().requires_grad_(False).to(device), meta

    def save(self, path: str | Path) -> None:
        weights, meta = self.weights()
        save_snapshot(path, weights, meta)


def read_posthoc_meta(path: Path) -> dict:
    """The metadata record of a power EMA snapshot, without reading its tensors."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
        record = json.loads(raw)["posthoc_ema"]
        return {k: record[k] for k in ("sigma_rel", "gamma", "step", "batch_size")}
    except (SafetensorError, OSError, ValueError, TypeError, KeyError) as err:
        raise SnapshotError(f"{path}: not a post-hoc EMA snapshot of this suite ({err!r})") from None


def power_snapshots(run_dir: str | Path) -> list[PowerSnapshot]:
    """The run's power EMA snapshots, by step then σ_rel; one line naming the directory when there are none."""
    folder = Path(run_dir) / POSTHOC_DIR
    paths = sorted(folder.glob("phema-*" + SUFFIX)) if folder.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"{folder}: no post-hoc EMA snapshots (train with train.posthoc_ema.sigma_rels "
                                "and train.posthoc_ema.snapshot_kimg set)")
    snaps = [PowerSnapshot(path=p, **read_posthoc_meta(p)) for p in paths]
    batch_sizes = {s.batch_size for s in snaps}
    if len(batch_sizes) > 1:
        raise SnapshotError(f"{folder}: snapshots of several batch sizes {sorted(batch_sizes)}; the step grid needs one")
    return sorted(snaps, key=lambda s: (s.step, s.sigma_rel))


def reconstruct(snapshots: list[PowerSnapshot], target: EMATarget, step: int | None = None) -> Reconstruction:
    """EDM2 §3.3: the combination of the snapshots taken up to `step` (default: the last one) whose profile is
    the least-squares fit of the target's profile at `step`."""
    step = max(s.step for s in snapshots) if step is None else step
    usable = [s for s in snapshots if s.step <= step]
    if not usable:
        raise ValueError(f"no post-hoc EMA snapshot was taken at or before step {step} (first: step "
                         f"{min(s.step for s in snapshots)})")
    grid = profiles.StepGrid(step)
    design = np.stack([grid.bin(profiles.power_profile(s.gamma, s.step, step)) for s in usable])  # (K, bins)
    wanted = grid.bin(target.profile(step, step, usable[0].batch_size))  # (bins,)
    coefficients, residual = profiles.solve_coefficients(design, wanted, grid)
    return Reconstruction(usable, coefficients, residual, target, step)
