"""Post-hoc EMA (EDM2 §3): σ_rel ↔ γ, the profiles of the tracked EMAs, reconstruction against EMAs tracked
directly, snapshots across kill -9 and resume, and the reconstruct_ema.py command."""

import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_OVERRIDES, run_cli, train_tiny
from models import ema_profiles as P
from training.posthoc_ema import EMATarget, PowerSnapshot, power_snapshots, reconstruct
from models.snapshot import read_snapshot
from training.ema import EMA, PowerEMAs

POSTHOC = ["train.posthoc_ema.sigma_rels=[0.05,0.1]", "train.posthoc_ema.snapshot_kimg=0.032"]


# ----------------------------------------------------------------------------
# The mathematics.


def test_sigma_rel_gamma_round_trip_and_edm2_values():
    # EDM2 §3.1 quotes γ ≈ 16.97 for σ_rel 0.05 and γ ≈ 6.94 for σ_rel 0.10
    assert P.sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert P.sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for sigma_rel in (0.01, 0.05, 0.1, 0.2, 0.28):
        assert P.gamma_to_sigma_rel(P.sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)
    with pytest.raises(ValueError, match="must be in"):
        P.sigma_rel_to_gamma(0.3)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_sigma_rel_is_the_std_of_the_tracked_profile(sigma_rel):
    """Independent of Eq. 4: the std of τ/t under the discrete profile of a long run, by direct summation."""
    profile = P.power_profile(P.sigma_rel_to_gamma(sigma_rel), 200_000, 200_000)
    assert profile.sum() == pytest.approx(1.0, rel=1e-12)
    assert P.profile_sigma_rel(profile) == pytest.approx(sigma_rel, rel=1e-3)


def track(ema_update, trajectory):
    """Feed a trajectory of weights (T, D) through an averager; -> the averaged (D,) after every step."""
    net = torch.nn.Linear(trajectory.shape[1], 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(trajectory[0])[None])
    averager = ema_update(net)
    out = []
    for step in range(1, len(trajectory)):
        with torch.no_grad():
            net.weight.copy_(torch.from_numpy(trajectory[step])[None])
        averager.step(net, step)
        out.append(averager.value())
    return np.stack(out)  # (T - 1, D): after steps 1 … T-1


class TrackedPower:
    def __init__(self, net, sigma_rel):
        self.emas = PowerEMAs(net, [sigma_rel])

    def step(self, net, step):
        self.emas.update(net, step)

    def value(self):
        return self.emas.nets[0].weight.detach().double().numpy()[0]


class TrackedClassic:
    def __init__(self, net, batch, halflife_kimg, rampup):
        self.ema, self.args = EMA(net), (batch, halflife_kimg, rampup)

    def step(self, net, step):
        batch, halflife_kimg, rampup = self.args
        self.ema.update(net, P.classic_beta(batch, step * batch, None, halflife_kimg, rampup))

    def value(self):
        return self.ema.net.weight.detach().double().numpy()[0]


def random_walk(steps: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=(steps + 1, dim)), axis=0) * 0.01 + 1.0  # (steps + 1, D): θ_0 … θ_steps


def test_profiles_are_exactly_what_the_trackers_average():
    trajectory = random_walk(300, 4)
    power = track(lambda net: TrackedPower(net, 0.1), trajectory)
    gamma = P.sigma_rel_to_gamma(0.1)
    for t in (1, 7, 150, 300):
        assert np.allclose(P.power_profile(gamma, t, 300) @ trajectory, power[t - 1], rtol=1e-6)
    classic = track(lambda net: TrackedClassic(net, 16, 0.5, 0.1), trajectory)
    for t in (1, 40, 300):
        weights = P.classic_profile(16, t, 300, None, 0.5, 0.1)
        assert weights.sum() == pytest.approx(1.0, rel=1e-9)
        assert np.allclose(weights @ trajectory, classic[t - 1], rtol=1e-6)


def test_reconstruction_matches_an_ema_tracked_directly():
    """Snapshots of σ_rel 0.05 and 0.10 every 25 steps; the σ_rel 0.075 EMA, tracked directly, is the oracle.
    Tolerance: reconstructed minus true weights = Σ_τ (ŵ_τ − w_τ) θ_τ, and with Σ ŵ = Σ w = 1 this is at most
    ‖ŵ − w‖₁ · max_τ |θ_τ − θ_T| per coordinate: the bound is computed from the profiles and the trajectory."""
    steps, every = 400, 25
    trajectory = random_walk(steps, 6, seed=1)
    tracked = {s: track(lambda net, s=s: TrackedPower(net, s), trajectory) for s in (0.05, 0.1, 0.075)}
    snaps = [PowerSnapshot(None, s, P.sigma_rel_to_gamma(s), t, 1)
             for t in range(every, steps + 1, every) for s in (0.05, 0.1)]
    recon = reconstruct(snaps, EMATarget(sigma_rel=0.075))
    assert recon.step == steps and recon.residual < 0.05
    combined = sum(x * tracked[s.sigma_rel][s.step - 1] for x, s in zip(recon.coefficients, snaps))
    truth = tracked[0.075][-1]
    w_hat = sum(x * P.power_profile(s.gamma, s.step, steps) for x, s in zip(recon.coefficients, snaps))
    w_true = P.power_profile(P.sigma_rel_to_gamma(0.075), steps, steps)
    bound = np.abs(w_hat - w_true).sum() * np.abs(trajectory - trajectory[-1]).max(axis=0)
    assert np.all(np.abs(combined - truth) <= bound + 1e-9)
    # and the reconstruction is much closer than the nearest stored EMA (σ_rel 0.05 or 0.10 at the end)
    nearest = min(np.abs(tracked[s][-1] - truth).max() for s in (0.05, 0.1))
    assert np.abs(combined - truth).max() < 0.3 * nearest


def test_a_stored_profile_reconstructs_to_itself():
    snaps = [PowerSnapshot(None, s, P.sigma_rel_to_gamma(s), t, 32) for t in (10, 20, 30) for s in (0.05, 0.1)]
    recon = reconstruct(snaps, EMATarget(sigma_rel=0.1), step=20)
    assert len(recon.snapshots) == 4 and recon.residual < 1e-9
    assert recon.coefficients == pytest.approx([0, 0, 0, 1], abs=1e-8)


def test_long_runs_use_a_binned_grid_with_the_same_answer():
    """2M steps (ImageNet's 2048 Mimg at batch 1024) bin 123 steps per bin; the coefficients agree with the
    exact grid on a run short enough for both, and the long run solves in seconds."""
    snaps = [PowerSnapshot(None, s, P.sigma_rel_to_gamma(s), t, 1) for t in range(2000, 20001, 2000)
             for s in (0.05, 0.1)]
    exact = reconstruct(snaps, EMATarget(sigma_rel=0.08))
    grid = P.StepGrid(20000, max_bins=500)
    design = np.stack([grid.bin(P.power_profile(s.gamma, s.step, 20000)) for s in snaps])
    binned, _ = P.solve_coefficients(design, grid.bin(P.power_profile(P.sigma_rel_to_gamma(0.08), 20000, 20000)), grid)
    assert np.abs(binned - exact.coefficients).max() < 0.02 * np.abs(exact.coefficients).max()
    long = [PowerSnapshot(None, s, P.sigma_rel_to_gamma(s), t, 1024) for t in range(50_000, 2_000_001, 50_000)
            for s in (0.05, 0.1)]
    start = time.perf_counter()
    recon = reconstruct(long, EMATarget(sigma_rel=0.08))
    assert recon.residual < 0.01 and time.perf_counter() - start < 60


# ----------------------------------------------------------------------------
# Training writes the snapshots; resume and kill -9 keep them exact.


def power_files(run_dir):
    return sorted((run_dir / "posthoc").glob("phema-*.safetensors"))


def same_tensors(a, b) -> bool:
    sa, sb = read_snapshot(a)[0], read_snapshot(b)[0]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def posthoc_run(tmp_path_factory, tiny_fmnist):
    run_dir = tmp_path_factory.mktemp("posthoc")
    train_tiny(run_dir, tiny_fmnist, *POSTHOC)
    return run_dir


def test_training_writes_fp16_power_snapshots_with_their_profile(posthoc_run):
    files = power_files(posthoc_run)
    assert len(files) == 8  # 2 σ_rel × 4 points (every 0.032 kimg of 0.128)
    weights, meta = read_snapshot(files[-1])
    assert meta["posthoc_ema"]["step"] == 8 and meta["posthoc_ema"]["batch_size"] == 16
    assert meta["posthoc_ema"]["sigma_rel"] == 0.1 and meta["kimg"] == 0.128
    assert any(v.dtype == torch.float16 for v in weights.values())
    assert [s.step for s in power_snapshots(posthoc_run)] == [2, 2, 4, 4, 6, 6, 8, 8]


def test_kill_and_rerun_leaves_the_same_power_snapshots(posthoc_run, tmp_path, tiny_fmnist):
    """kill -9 at some moment after the first checkpoint, then the same command: every snapshot's tensors equal
    the uninterrupted run's (the run may already have finished when the kill lands; the claim holds either way)."""
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "train.py"), "--config", "configs/train/fashion-mnist.yaml",
           f"run_dir={run_dir}", f"data.path={tiny_fmnist}", *TINY_OVERRIDES, *POSTHOC]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "000000004").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    train_tiny(run_dir, tiny_fmnist, *POSTHOC)
    assert [p.name for p in power_files(run_dir)] == [p.name for p in power_files(posthoc_run)]
    assert all(same_tensors(a, b) for a, b in zip(power_files(run_dir), power_files(posthoc_run)))
    assert not list((run_dir / "posthoc").glob(".*tmp*"))


def test_resuming_with_posthoc_switched_on_mid_run_is_one_line(tmp_path, tiny_fmnist):
    run_dir = tmp_path / "late"
    train_tiny(run_dir, tiny_fmnist, "train.posthoc_ema.sigma_rels=[]", "--stop-after-kimg", "0.064")
    proc = train_tiny(run_dir, tiny_fmnist, *POSTHOC, check=False)
    assert proc.returncode != 0 and "cannot start mid-run" in proc.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------
# The command.


def test_reconstruct_writes_a_snapshot_that_generate_reads(posthoc_run, tmp_path):
    out = tmp_path / "ema-0.075.safetensors"
    proc = run_cli("reconstruct_ema.py", "--run", str(posthoc_run), "--sigma-rel", "0.075", "--out", str(out))
    assert "profile residual" in proc.stdout
    weights, meta = read_snapshot(out)
    assert meta["ema"]["sigma_rel"] == 0.075 and meta["kimg"] == 0.128 and "posthoc_ema" not in meta
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    run_cli("generate.py", "--ckpt", str(out), "--num-samples", "4", "--steps", "2", "--out", str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").exists()
    classic = tmp_path / "classic.safetensors"
    run_cli("reconstruct_ema.py", "--run", str(posthoc_run), "--halflife-kimg", "0.05", "--rampup-ratio", "0.1",
            "--kimg", "0.064", "--out", str(classic))
    assert read_snapshot(classic)[1]["kimg"] == 0.064


def test_sweep_scores_each_length_and_names_the_best(posthoc_run, tmp_path, tiny_fmnist):
    from evaluation import fmnist_features

    # the feature classifier, trained on the tiny directory for one epoch (the CLIs read it from the cache)
    (tmp_path / "cache").mkdir()
    net = fmnist_features.train_classifier(str(tiny_fmnist), epochs=1)
    torch.save(net.state_dict(), tmp_path / "cache" / fmnist_features.cache_path().name)
    ref = tmp_path / "ref.npz"
    cfg = ["num_samples=20", "batch_gpu=20", "pr_features=0", "sampling.num_steps=2"]
    run_cli("eval_latent.py", "ref", "--config", "configs/test/fashion-mnist.yaml", "--source",
            f"fashion_mnist:train:{tiny_fmnist}", "--out", str(ref), *cfg,
            env_extra={"MASKDIT_CACHE": str(tmp_path / "cache")})
    out = tmp_path / "sweep.json"
    proc = run_cli("reconstruct_ema.py", "sweep", "--run", str(posthoc_run), "--config",
                   "configs/test/fashion-mnist.yaml", "--ref", str(ref), "--sigma-rel", "0.05", "0.15",
                   "--halflife-kimg", "0.05", "--out", str(out), *cfg,
                   env_extra={"MASKDIT_CACHE": str(tmp_path / "cache")})
    assert proc.stdout.strip().splitlines()[-1].startswith("best: ")
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["sigma_rel"] for r in rows] == [0.05, 0.15, None] and all(math.isfinite(r["fd"]) for r in rows)


def test_bad_requests_are_one_line(full_run, tmp_path):
    (tmp_path / "untracked").mkdir()  # a run directory without power EMAs (train.posthoc_ema.sigma_rels: [])
    proc = run_cli("reconstruct_ema.py", "--run", str(tmp_path / "untracked"), "--sigma-rel", "0.1", "--out",
                   str(tmp_path / "x.safetensors"), check=False)
    assert proc.returncode != 0 and "no post-hoc EMA snapshots" in proc.stderr.strip().splitlines()[-1]
    proc = run_cli("reconstruct_ema.py", "--run", str(full_run), "--sigma-rel", "0.5", "--out", "x.safetensors",
                   check=False)
    assert proc.returncode == 2 and "must be in" in proc.stderr.strip().splitlines()[-1]


def test_default_quality_benchmark_trains_scores_and_reports(tmp_path, tiny_fmnist):
    """The regression check of README command 1 on a tiny model: a run's JSON with the classic EMA and a
    post-hoc length, a re-run that skips it, and the report's paired table from the files alone."""
    from evaluation import fmnist_features

    cache = tmp_path / "cache"
    cache.mkdir()
    torch.save(fmnist_features.train_classifier(str(tiny_fmnist), epochs=1).state_dict(),
               cache / fmnist_features.cache_path().name)
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(f"base: {REPO / 'configs/test/fashion-mnist.yaml'}\nbatch_gpu: 16\npr_features: 0\n"
                        "sampling:\n  num_steps: 2\n")
    results = tmp_path / "docs" / "runs"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith(("train.total_kimg", "train.snapshot_kimg",
                                                            "train.checkpoint_kimg", "train.sample_kimg"))]
    common = ["--kimg", "0.064", "--num-samples", "16", "--eval-config", str(eval_cfg), "--reference",
              f"fashion_mnist:train:{tiny_fmnist}", "--work", str(tmp_path / "work"), "--results", str(results)]
    env = {"MASKDIT_CACHE": str(cache)}
    for recipe in ("readme-v1", "default"):
        run_cli("benchmarks.default_quality", "run", "--recipe", recipe, "--seeds", "0", "1", "--sigma-rels", "0.1",
                *common, "--set", f"data.path={tiny_fmnist}", *tiny, "train.posthoc_ema.snapshot_kimg=0.032",
                env_extra=env)
    import json

    record = json.loads((results / "default-s1-0.064kimg-n16.json").read_text())
    assert [s["ema"] for s in record["scores"]] == ["classic", 0.1] and record["img_per_s"] > 0
    assert all(math.isfinite(s["fd"]) and 0 <= s["class_accuracy"] <= 1 for s in record["scores"])
    before = sorted(p.stat().st_mtime_ns for p in results.iterdir())
    proc = run_cli("benchmarks.default_quality", "run", "--recipe", "default", "--seeds", "0", "1", *common,
                   "--sigma-rels", "0.1", env_extra=env)
    assert proc.stdout.count(": done") == 2 and sorted(p.stat().st_mtime_ns for p in results.iterdir()) == before
    proc = run_cli("benchmarks.default_quality", "report", "--results", str(results), "--write-docs")
    paired = [line for line in proc.stdout.splitlines() if line.startswith("| default (0.064")]
    assert len(paired) == 1 and "| 2 |" in paired[0]
    assert (tmp_path / "docs" / "README.md").read_text().strip() == proc.stdout.strip()
