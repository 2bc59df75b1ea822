"""End-to-end: the real train.py on a tiny model and a tiny Fashion-MNIST-format directory."""

import json

import pytest
import torch

from conftest import REPO, read_checkpoint, read_snapshot_meta, train_tiny
from training.config import ConfigError, load_config


def load_state(ckpt_dir):
    return read_checkpoint(ckpt_dir)


def newest_checkpoint(run_dir):
    return sorted((run_dir / "checkpoints").iterdir())[-1]


def test_run_writes_checkpoint_grid_logs_and_prunes(full_run):
    ckpts = sorted(p.name for p in (full_run / "checkpoints").iterdir())
    assert ckpts == ["000000008"]  # 8 steps of 16; checkpoints at 4 and 8, keep_checkpoints=1
    assert (full_run / "config.yaml").read_text().count("total_kimg: 0.128") == 1
    assert list((full_run / "samples").glob("grid-*.png"))
    assert len(list((full_run / "snapshots").glob("ema-*.safetensors"))) == 2
    stats = [json.loads(line) for line in (full_run / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4, 6, 8] and all(s["loss"] > 0 for s in stats)
    assert list((full_run / "tensorboard").iterdir())
    state, ema = load_state(full_run / "checkpoints" / "000000008")
    assert state["cur_nimg"] == 128 and state["data"]["position"] == 128 and ema["kimg"] == 0.128


def test_interrupted_and_rerun_matches_uninterrupted(full_run, tmp_path, tiny_fmnist):
    run_dir = tmp_path / "resumed"
    train_tiny(run_dir, tiny_fmnist, "train.keep_checkpoints=1", "--stop-after-kimg", "0.064")
    assert newest_checkpoint(run_dir).name == "000000004"
    proc = train_tiny(run_dir, tiny_fmnist, "train.keep_checkpoints=1")
    assert "resuming from" in proc.stdout
    a_state, a_ema = load_state(full_run / "checkpoints" / "000000008")
    b_state, b_ema = load_state(newest_checkpoint(run_dir))
    for key in a_state["net"]:
        assert torch.equal(a_state["net"][key], b_state["net"][key]), key
    for key in a_ema["ema"]:
        assert torch.equal(a_ema["ema"][key], b_ema["ema"][key]), key
    a_opt, b_opt = a_state["optimizer"]["state"], b_state["optimizer"]["state"]
    assert all(torch.equal(a_opt[k]["exp_avg_sq"], b_opt[k]["exp_avg_sq"]) for k in a_opt)


def snapshot_minutes(run_dir):
    return [read_snapshot_meta(p)["train_minutes"] for p in sorted((run_dir / "snapshots").glob("ema-*.safetensors"))]


def test_stop_after_minutes_and_training_clock_snapshots(tmp_path, tiny_fmnist):
    """--stop-after-min ends the run with one checkpoint; snapshots follow the training clock, which a
    resumed run continues."""
    run_dir = tmp_path / "clock"
    clock = ["train.total_kimg=1000", "train.snapshot_minutes=0.02", "train.keep_snapshots=0",
             "train.checkpoint_kimg=1000", "train.sample_kimg=1000", "train.snapshot_kimg=1000"]
    train_tiny(run_dir, tiny_fmnist, "--stop-after-min", "0.05", *clock)
    state, ema = load_state(newest_checkpoint(run_dir))
    assert len(list((run_dir / "checkpoints").iterdir())) == 1
    # it stops at the first step past 3 s: up to one step late, and a tiny step takes up to ~1 s on a loaded CPU
    assert 2.5 <= state["train_seconds"] <= 4.5 and ema["train_minutes"] == state["train_seconds"] / 60
    first = snapshot_minutes(run_dir)
    assert len(first) == 2 and 0.02 <= first[0] < 0.03 and 0.04 <= first[1] < 0.05

    proc = train_tiny(run_dir, tiny_fmnist, "--stop-after-min", "0.03", *clock)
    assert "resuming from" in proc.stdout
    resumed, _ = load_state(newest_checkpoint(run_dir))
    # the clock continues from the checkpoint's (a reset clock would read ≤ 1.8 s + one step, below 2.5 s); how far
    # it gets in this 1.8 s of wall-clock depends on load, since writing the snapshots is off the clock
    assert resumed["train_seconds"] > state["train_seconds"]
    later = snapshot_minutes(run_dir)[2:]
    assert later and all(0.06 <= m <= resumed["train_seconds"] / 60 for m in later)  # = when the last step crossed


def test_snapshots_at_listed_points(tmp_path, tiny_fmnist):
    """train.snapshot_at_kimg writes one EMA snapshot at the first step that reaches each point (16 images a
    step: 0.016 is step 1 exactly, 0.05 falls in step 4, which ends at 0.064), beside the periodic ones."""
    run_dir = tmp_path / "points"
    train_tiny(run_dir, tiny_fmnist, "train.snapshot_kimg=0.096", "train.keep_snapshots=0",
               "train.snapshot_at_kimg=[0.016,0.05,0.128]")
    kimgs = [float(p.name[4:-12]) for p in sorted((run_dir / "snapshots").glob("ema-*.safetensors"))]
    assert kimgs == [0.016, 0.064, 0.096, 0.128]
    with pytest.raises(ConfigError, match=r"train.snapshot_at_kimg: \[3.5, 0.0\] must be positive points"):
        load_config(REPO / "configs/train/fashion-mnist.yaml", ["train.snapshot_at_kimg=[3.5,0]"])


def test_finetune_loads_weights_and_resets_optimizer(full_run, tmp_path, tiny_fmnist):
    source = full_run / "checkpoints" / "000000008"
    run_dir = tmp_path / "ft"
    proc = train_tiny(run_dir, tiny_fmnist, "optim.lr=0", "train.total_kimg=0.032",
                      config="configs/finetune/fashion-mnist.yaml", *["--init-from", str(source)])
    assert "initialised with weights + EMA from checkpoint" in proc.stdout
    src_state, _ = load_state(source)
    ft_state, _ = load_state(newest_checkpoint(run_dir))
    assert ft_state["step"] == 2 and ft_state["cur_nimg"] == 32
    for key in src_state["net"]:  # lr 0: weights are exactly the loaded ones
        assert torch.equal(src_state["net"][key], ft_state["net"][key]), key
    steps = {int(s["step"]) for s in ft_state["optimizer"]["state"].values()}
    assert steps == {2}  # fresh optimizer: 2 steps, not 8 + 2
    assert ft_state["config"]["mask"]["ratio"] == 0.0


def test_misspelled_key_fails_with_one_line(tmp_path, tiny_fmnist):
    proc = train_tiny(tmp_path / "bad", tiny_fmnist, "train.totl_kimg=1", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: command line: bad key 'train.totl_kimg': Key 'totl_kimg' not in "
                               "'TrainConfig'. Did you mean") and "'total_kimg'" in lines[0]
    assert not (tmp_path / "bad").exists()


def test_shape_mismatch_fails_before_training(tmp_path, tiny_fmnist):
    proc = train_tiny(tmp_path / "shape", tiny_fmnist, "model.in_channels=3", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sample shape (1, 32, 32) does not match the model" in lines[0]


@pytest.mark.parametrize("strategy", sorted(__import__("diffusion.strategies", fromlist=["STRATEGIES"]).STRATEGIES))
def test_every_strategy_trains_and_writes_telemetry(strategy, tmp_path, tiny_fmnist):
    run_dir = tmp_path / strategy
    train_tiny(run_dir, tiny_fmnist, f"diffusion.strategy.name={strategy}", "train.total_kimg=0.064",
               "train.sample_kimg=0.064", "diffusion.strategy.params={}" if strategy != "min_snr" else
               "diffusion.strategy.params.gamma=5.0")
    assert (run_dir / "samples" / "sigma-000000kimg.png").is_file()
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    bins = stats[-1]["sigma_bins"]
    assert len(bins["ln_sigma"]) == len(bins["density"]) == len(bins["weight"])
    assert sum(bins["density"]) > 0 and all(w > 0 for w in bins["weight"])
    state, _ = read_checkpoint(run_dir / "checkpoints" / "000000004")
    assert state["config"]["diffusion"]["strategy"]["name"] == strategy
