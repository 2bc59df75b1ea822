"""Two processes on the CPU (torchrun + gloo): the same training and sampling as one process."""

import json

import numpy as np
import pytest
import torch

from conftest import read_checkpoint, run_cli, train_tiny


def load_state(ckpt_dir):
    return read_checkpoint(ckpt_dir)[0]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_fmnist):
    run_dir = tmp_path_factory.mktemp("two")
    train_tiny(run_dir, tiny_fmnist, processes=2)
    return run_dir


def test_ranks_identical_and_match_one_process(two_process_run, full_run):
    two = load_state(two_process_run / "checkpoints" / "000000008")
    one = load_state(full_run / "checkpoints" / "000000008")
    assert len(two["param_checksums"]) == 2 and two["param_checksums"][0] == two["param_checksums"][1]
    assert two["cur_nimg"] == one["cur_nimg"] == 128
    for key in one["net"]:  # same global batch, same draws: equal up to the order of float reductions
        assert torch.allclose(one["net"][key], two["net"][key], atol=1e-6), key


def test_logged_loss_is_reduced_over_ranks(two_process_run, full_run):
    """Rank 0 alone sees half the batch; the logged loss equals the one-process loss of the whole batch."""
    read = lambda run: [json.loads(line)["loss"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert np.allclose(read(two_process_run), read(full_run), rtol=1e-5)


def test_two_process_resume_is_exact(two_process_run, tmp_path, tiny_fmnist):
    run_dir = tmp_path / "resumed"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.064", processes=2)
    proc = train_tiny(run_dir, tiny_fmnist, processes=2)
    assert "resuming from" in proc.stdout
    a = load_state(two_process_run / "checkpoints" / "000000008")
    b = load_state(run_dir / "checkpoints" / "000000008")
    for key in a["net"]:
        assert torch.equal(a["net"][key], b["net"][key]), key


def test_generation_with_two_processes_equals_one(full_run, tmp_path):
    args = ["--ckpt", str(full_run), "--num-samples", "7", "--steps", "3", "--batch", "2", "--cfg-scale", "1.5"]
    run_cli("generate.py", *args, "--out", str(tmp_path / "one.npz"))
    run_cli("generate.py", *args, "--out", str(tmp_path / "two.npz"), processes=2)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert np.array_equal(one["arr_0"], two["arr_0"]) and np.array_equal(one["arr_1"], two["arr_1"])


def test_two_process_unmasking_finetune(full_run, tmp_path, tiny_fmnist):
    """Mask ratio 0 on two processes: the mask token gets a zero gradient, so DDP's reduction completes
    (it used to stop at step 2 with "Expected to have finished reduction in the prior iteration")."""
    run_dir = tmp_path / "finetune"
    init = full_run / "checkpoints" / "000000008"
    train_tiny(run_dir, tiny_fmnist, "--init-from", str(init), config="configs/finetune/fashion-mnist.yaml",
               processes=2)
    state = load_state(run_dir / "checkpoints" / "000000008")
    assert state["cur_nimg"] == 128 and state["param_checksums"][0] == state["param_checksums"][1]
