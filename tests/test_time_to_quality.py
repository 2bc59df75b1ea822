"""The time-to-quality benchmark end to end at a CI-sized budget, and its speed-up arithmetic."""

import json
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, run_cli

sys.path.insert(0, str(REPO / "benchmarks"))
import time_to_quality as ttq  # noqa: E402

TINY_MODEL = ["model.depth=2", "model.width=32", "model.heads=2", "model.decoder_depth=1", "model.decoder_width=32",
              "model.decoder_heads=2", "train.batch_size=16", "optim.warmup_kimg=0.05"]


def test_first_reach_interpolates_between_evaluation_points():
    xs, fds = np.array([1.0, 2.0, 3.0]), np.array([100.0, 60.0, 40.0])
    assert ttq.first_reach(xs, fds, 80.0) == pytest.approx(1.5)  # halfway from 100 to 60
    assert ttq.first_reach(xs, fds, 40.0) == pytest.approx(3.0)
    assert ttq.first_reach(xs, fds, 100.0) == pytest.approx(1.0)
    assert ttq.first_reach(xs, fds, 39.0) is None


def test_summary_speedups_against_the_baseline():
    def run(seed, fds, kimgs):
        return {"seed": seed, "img_per_s": 10.0, "points": [
            {"train_minutes": m, "kimg": k, "fd": f, "class_accuracy": 0.5} for m, k, f in zip((1, 2), kimgs, fds)]}

    by_row = {"dit_edm": [run(0, (80.0, 50.0), (1.0, 2.0))],
              "maskdit_edm": [run(0, (60.0, 40.0), (2.0, 4.0)), run(1, (40.0, 30.0), (2.0, 4.0))]}
    summary = {s["row"]: s for s in ttq.summarize(by_row, "dit_edm")}
    assert summary["dit_edm"]["speedup_wallclock"] == pytest.approx(1.0)
    # seed mean reaches FD 50 at the first point: 2 min / 1 min; images 2 kimg / 2 kimg
    assert summary["maskdit_edm"]["fd"] == [50.0, 35.0] and summary["maskdit_edm"]["fd_sd"][0] == pytest.approx(10.0)
    assert summary["maskdit_edm"]["speedup_wallclock"] == pytest.approx(2.0)
    assert summary["maskdit_edm"]["speedup_images"] == pytest.approx(1.0)


def test_budget_must_be_a_multiple_of_the_evaluation_interval():
    with pytest.raises(SystemExit):
        ttq.parse_args(["--minutes", "1", "--eval-every", "0.3"])


def test_benchmark_end_to_end_tiny_budget(tmp_path, tiny_fmnist):
    """Three rows (transformer without mask, adaptive MaskDiT, U-Net DDPM) for 0.1 training minutes each,
    evaluated at 0.05 and 0.1 minutes; a re-run reuses the finished runs."""
    from evaluation import fmnist_features

    cache = tmp_path / "cache"
    env = {"MASKDIT_CACHE": str(cache)}
    net = fmnist_features.train_classifier(str(tiny_fmnist), epochs=1)
    cache.mkdir()
    torch.save(net.state_dict(), cache / fmnist_features.cache_path().name)
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(f"base: {REPO / 'configs/test/fashion-mnist.yaml'}\nbatch_gpu: 16\nnum_steps: 2\n"
                        "pr_features: 16\n")
    out = tmp_path / "bench"
    args = ["--minutes", "0.1", "--eval-every", "0.05", "--rows", "dit_edm", "maskdit_adaptive", "unet_ddpm",
            "--num-samples", "16", "--unet-channels", "16", "--eval-config", str(eval_cfg),
            "--reference", f"fashion_mnist:train:{tiny_fmnist}",
            "--out", str(out), f"data.path={tiny_fmnist}", *TINY_MODEL]
    run_cli("benchmarks/time_to_quality.py", *args, env_extra=env)

    results = {r["row"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(results) == {"dit_edm", "maskdit_adaptive", "unet_ddpm"}
    for r in results.values():
        assert len(r["fd"]) == 2 and all(f > 0 for f in r["fd"])
        # snapshots were taken when the training clock passed 0.05 and 0.1 minutes
        assert r["minutes"][0] == pytest.approx(0.05, abs=0.02) and r["minutes"][1] == pytest.approx(0.1, abs=0.02)
        assert r["kimg"][1] > r["kimg"][0] > 0
    assert results["dit_edm"]["speedup_wallclock"] == pytest.approx(1.0)
    unet_cfg = OmegaConf.load(out / "runs/unet_ddpm-seed0/config.yaml")
    assert (unet_cfg.model.arch, unet_cfg.model.precond, unet_cfg.diffusion.strategy.name) == (
        "ddpm_unet", "vp", "ddpm_uniform")
    table = (out / "table.md").read_text()
    assert "U-Net DDPM" in table and "FD @ 0.1 min" in table
    assert (out / "quality_vs_time.png").stat().st_size > 0
    assert list((out / "runs/maskdit_adaptive-seed0").glob("grid-*min.png"))

    # a run stopped during evaluation is evaluated again, not retrained; finished runs are not redone
    dit = out / "runs/dit_edm-seed0"
    (dit / "eval.json").unlink()
    trained = [(p.name, p.stat().st_mtime_ns) for p in (dit / "checkpoints").iterdir()]
    proc = run_cli("benchmarks/time_to_quality.py", *args, env_extra=env)
    assert [(p.name, p.stat().st_mtime_ns) for p in (dit / "checkpoints").iterdir()] == trained
    assert (out / "table.md").read_text() == table and "FD @ 0.05 min" in proc.stdout
