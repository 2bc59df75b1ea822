"""What happens when things go wrong: non-finite losses, damaged checkpoints, crafted pickles, a second copy of a
run, leftovers of a kill, and bad inputs that must fail with one line before any long work."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, read_checkpoint, run_cli, train_tiny


def checkpoints(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_non_finite_loss_stops_and_keeps_the_last_healthy_checkpoint(tmp_path, tiny_fmnist):
    run_dir = tmp_path / "nan"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.064", "train.keep_checkpoints=1")
    assert checkpoints(run_dir) == ["000000004"]
    proc = train_tiny(run_dir, tiny_fmnist, "optim.lr=1e12", "train.keep_checkpoints=1", check=False)
    assert proc.returncode != 0
    line = last_line(proc)
    assert line.startswith("error: the training loss became non-finite between step") and "optim.lr=1e+12" in line
    assert checkpoints(run_dir) == ["000000004"]  # nothing written from the broken state, nothing pruned
    state, snap = read_checkpoint(run_dir / "checkpoints" / "000000004")
    assert all(torch.isfinite(t).all() for t in [*state["net"].values(), *snap["ema"].values()])
    assert all(p.name.endswith("0.064.safetensors") for p in (run_dir / "snapshots").iterdir())


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(full_run, tmp_path, tiny_fmnist):
    run_dir = tmp_path / "damaged"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.096", "train.checkpoint_kimg=0.032")
    assert checkpoints(run_dir)[-2:] == ["000000004", "000000006"]
    state_file = run_dir / "checkpoints" / "000000006" / "training_state.pt"
    state_file.write_bytes(state_file.read_bytes()[:200])  # truncated
    proc = train_tiny(run_dir, tiny_fmnist, "train.checkpoint_kimg=0.032")
    assert "skipping checkpoint 000000006" in proc.stdout and "checksum mismatch" in proc.stdout
    assert "resuming from" in proc.stdout and "000000004" in proc.stdout
    # 64 flipped bytes in the weights: caught by the checksum too
    weights = run_dir / "checkpoints" / "000000008" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-64:] = bytes(b ^ 0xFF for b in raw[-64:])
    weights.write_bytes(bytes(raw))
    proc = train_tiny(run_dir, tiny_fmnist, "train.total_kimg=0.16", "train.checkpoint_kimg=0.032")
    assert "skipping checkpoint 000000008" in proc.stdout
    a, _ = read_checkpoint(full_run / "checkpoints" / "000000008")
    b, _ = read_checkpoint(run_dir / "checkpoints" / "000000008")  # re-made from step 6: identical to a clean run
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])


class Marker:
    """Unpickling this writes a marker file: proof that a loader ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_crafted_pickle_never_runs(tmp_path, full_run, tiny_fmnist):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": 1, "ema": Marker(marker)}, f)
    proc = run_cli("generate.py", "--ckpt", str(evil), "--out", str(tmp_path / "g.png"), check=False)
    assert proc.returncode != 0 and "never unpickles" in last_line(proc)
    proc = run_cli("eval_latent.py", "--config", "configs/test/fashion-mnist.yaml", "--ckpt", str(evil), "--ref",
                   str(evil), check=False)
    assert proc.returncode != 0
    proc = train_tiny(tmp_path / "ft", tiny_fmnist, "--init-from", str(evil), check=False)
    assert proc.returncode != 0 and "never unpickles" in last_line(proc)
    # a checkpoint directory whose training state is a crafted pickle: refused by the checksum, and by
    # weights_only if the checksum were forged too
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    for f in (full_run / "checkpoints" / "000000008").iterdir():
        (ckpt_dir / f.name).write_bytes(f.read_bytes())
    torch.save({"optimizer": Marker(marker)}, ckpt_dir / "training_state.pt")
    sums = json.loads((ckpt_dir / "checksums.json").read_text())
    from training.checkpoint import sha256

    sums["training_state.pt"] = sha256(ckpt_dir / "training_state.pt")
    (ckpt_dir / "checksums.json").write_text(json.dumps(sums))
    proc = train_tiny(tmp_path / "ft2", tiny_fmnist, "--init-from", str(ckpt_dir), check=False)
    assert proc.returncode != 0 and "unreadable" in last_line(proc)
    from evaluation.inception import check_loads_without_code

    with pytest.raises(ValueError, match="not a plain Inception weights file"):
        check_loads_without_code(evil)
    assert not marker.exists()


def test_second_copy_of_a_run_refuses(tmp_path, tiny_fmnist):
    from training.checkpoint import RunLockedError, lock_run_dir

    run_dir = tmp_path / "locked"
    held = lock_run_dir(run_dir)
    proc = train_tiny(run_dir, tiny_fmnist, check=False)
    assert proc.returncode != 0 and "is in use by another process" in last_line(proc)
    with pytest.raises(RunLockedError):
        lock_run_dir(run_dir)
    held.close()  # released (as the OS does when a process dies, kill -9 included)
    lock_run_dir(run_dir).close()


def test_old_pickled_checkpoints_convert_explicitly_and_resume(full_run, tmp_path, tiny_fmnist):
    """A format-1 checkpoint (pickled training_state.pt with the weights + ema.pt) is refused by train.py with
    one line, and scripts/convert_checkpoint.py makes it resumable."""
    state, snap = read_checkpoint(full_run / "checkpoints" / "000000008")
    run_dir = tmp_path / "old"
    old = run_dir / "checkpoints" / "000000008"
    old.mkdir(parents=True)
    for rng in state["rng"]:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)
    torch.save(state, old / "training_state.pt")
    torch.save({"format": 1, **snap}, old / "ema.pt")
    proc = train_tiny(run_dir, tiny_fmnist, "train.total_kimg=0.16", check=False)
    assert proc.returncode != 0 and "convert_checkpoint.py" in proc.stdout + proc.stderr
    subprocess.run([sys.executable, str(REPO / "scripts/convert_checkpoint.py"), str(run_dir)], check=True)
    proc = train_tiny(run_dir, tiny_fmnist, "train.total_kimg=0.16")
    assert "resuming from" in proc.stdout and checkpoints(run_dir)[-1] == "000000010"


def test_kill_leftovers_are_cleaned_and_stats_are_not_duplicated(tmp_path, tiny_fmnist):
    run_dir = tmp_path / "leftovers"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.064")
    (run_dir / "snapshots" / ".ema-0000000.096.tmp123.safetensors").write_bytes(b"partial")
    (run_dir / "snapshots" / ".tmpQ7xk2B").write_bytes(b"partial")  # safetensors' own temp file, killed mid-write
    (run_dir / "checkpoints" / ".tmp-000000006").mkdir()
    with open(run_dir / "stats.jsonl", "a") as f:  # rows logged after the checkpoint, then killed
        f.write(json.dumps({"kimg": 0.096, "step": 6, "loss": 1.0}) + "\n")
    train_tiny(run_dir, tiny_fmnist)
    assert not list((run_dir / "snapshots").glob(".*")) and not list((run_dir / "checkpoints").glob(".tmp-*"))
    steps = [json.loads(line)["step"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]


def test_resume_with_a_changed_model_size_names_the_keys(full_run, tmp_path, tiny_fmnist):
    run_dir = tmp_path / "resized"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.064")
    proc = train_tiny(run_dir, tiny_fmnist, "model.width=48", check=False)
    line = last_line(proc)
    assert proc.returncode != 0 and "weights do not fit the model config" in line and "of another shape" in line


def test_bad_inputs_fail_with_one_line(full_run, tmp_path):
    for args, expected in ((["--num-samples", "0"], "--num-samples must be positive"),
                           (["--batch", "0"], "--batch must be positive"), (["--steps", "0"], "--steps must be positive")):
        proc = run_cli("generate.py", "--ckpt", str(full_run), "--out", str(tmp_path / "g.png"), *args, check=False)
        assert proc.returncode != 0 and expected in last_line(proc)
    not_ckpt = tmp_path / "notes.safetensors"
    not_ckpt.write_text("hello")
    proc = run_cli("generate.py", "--ckpt", str(not_ckpt), "--out", str(tmp_path / "g.png"), check=False)
    assert proc.returncode != 0 and "unreadable safetensors file" in last_line(proc)
    proc = run_cli("train.py", "--config", "configs/train/fashion-mnist.yaml", "train.total_kimg=-1", check=False)
    assert "train.total_kimg: must be positive" in last_line(proc)
    ref = tmp_path / "ref.npz"
    np.savez(ref, mu=np.zeros(7), sigma=np.eye(7))
    proc = run_cli("eval_latent.py", "--config", "configs/test/fashion-mnist.yaml", "--ckpt", str(full_run), "--ref",
                   str(ref), check=False)
    assert proc.returncode != 0 and "statistics of 7-d features" in last_line(proc)


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import shutil as shutil_module

    from utils import atomic

    target = tmp_path / "state.pt"
    atomic.atomic_torch_save({"a": torch.ones(2)}, target)

    def failing_save(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed; basic_ios::clear")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: shutil_module._ntuple_diskusage(10, 10, 0))
    with pytest.raises(atomic.DiskFullError, match=f"no space left on {tmp_path}"):
        atomic.atomic_torch_save({"a": torch.zeros(2)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target)["a"], torch.ones(2)) and not list(tmp_path.glob(".*tmp*"))


def test_corrupt_lmdb_record_is_named_in_one_line():
    from dataio.latent_batches import record_error_line

    wrapped = ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1\nValueError: LMDB /d/in.lmdb key 000000042: corrupted record "
                         "(12 bytes, expected 2056)\n")
    assert record_error_line(wrapped) == "LMDB /d/in.lmdb key 000000042: corrupted record (12 bytes, expected 2056)"


def test_extract_accepts_the_one_channel_npz_that_generate_writes(tmp_path):
    from dataio.image_sources import open_source

    npz = tmp_path / "g.npz"
    np.savez(npz, arr_0=np.full((3, 8, 8, 1), 200, np.uint8), arr_1=np.array([0, 1, 2]))
    source = open_source(f"npz:{npz}")
    image, label = source.load(1)
    assert image.mode == "RGB" and image.size == (8, 8) and label == 1
    np.savez(npz, arr_0=np.zeros((3, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"arr_0 must be uint8 \(N, H, W\[, 1\|3\|4\]\); got float32"):
        open_source(f"npz:{npz}")


def test_an_unwritable_run_directory_stops_at_start_with_one_line(tmp_path, tiny_fmnist):
    """As root, permissions are not enforced, so an unwritable folder is simulated by a regular file where the
    folder belongs (the write fails the same way: one line naming the folder, before any lock, log or event
    file, and nothing is created)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = train_tiny(blocker / "run", tiny_fmnist, check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        f"error: cannot write in {blocker / 'run'} ({blocker} is a file, not a folder): make it writable (or "
        "choose another path) and re-run"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("in the way")
    proc = train_tiny(run_dir, tiny_fmnist, check=False)
    assert proc.returncode != 0 and f"cannot write in {run_dir / 'checkpoints'}" in last_line(proc)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints"]  # no lock, log, stats or events


def test_a_checkpoint_that_cannot_be_written_stops_with_one_line_and_keeps_the_last(tmp_path, tiny_fmnist):
    run_dir = tmp_path / "run"
    train_tiny(run_dir, tiny_fmnist, "--stop-after-kimg", "0.064")
    before = {p: p.read_bytes() for p in (run_dir / "checkpoints").rglob("*") if p.is_file()}
    (run_dir / "checkpoints" / ".tmp-000000008").write_text("in the way of the next checkpoint's temp folder")
    proc = train_tiny(run_dir, tiny_fmnist, check=False)
    blocked = run_dir / "checkpoints" / ".tmp-000000008"
    assert proc.returncode != 0 and last_line(proc).startswith(f"error: cannot write model.safetensors in {blocked} "
                                                              f"({blocked} is a file, not a folder)")
    assert not any("Traceback" in line for line in proc.stderr.splitlines())
    assert checkpoints(run_dir) == ["000000004"]
    assert all(p.read_bytes() == data for p, data in before.items())  # the previous checkpoint as it was


def test_a_full_disk_at_start_is_the_same_one_line(tmp_path, monkeypatch):
    """Every writer a run starts (lock, log, events, stats) comes after the start check, so one probe covers
    them; a full disk is faked by the probe's fsync failing with ENOSPC."""
    import errno
    import os

    from utils import atomic

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(atomic.DiskFullError, match=f"^no space left on {tmp_path / 'run'}: free some space"):
        atomic.check_writable([tmp_path / "run"])
    assert [p.name for p in (tmp_path / "run").iterdir()] == []  # the probe file is removed


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    from utils.cli import run_command

    def broken_main():
        raise RuntimeError("a deep library error\nwith a second line")

    monkeypatch.setattr(sys, "argv", ["generate.py", "--ckpt", "x.safetensors"])
    with pytest.raises(SystemExit) as err:
        run_command(broken_main)
    assert str(err.value) == ("error: generate.py --ckpt x.safetensors: unexpected RuntimeError: a deep library error "
                              "(run with --debug or MASKDIT_DEBUG=1 for the full traceback)")
    monkeypatch.setattr(sys, "argv", ["generate.py", "--debug", "--ckpt", "x.safetensors"])
    released = []
    with pytest.raises(RuntimeError):
        run_command(broken_main, lambda: released.append(True))
    assert sys.argv == ["generate.py", "--ckpt", "x.safetensors"] and released == [True]

    def unwritable_output():
        from utils.atomic import UnwritableError
        raise UnwritableError("cannot write grid.png in /out (Read-only file system); ...")

    with pytest.raises(SystemExit) as err:  # a failed write is already one line naming it: not "unexpected"
        run_command(unwritable_output)
    assert str(err.value) == "error: cannot write grid.png in /out (Read-only file system); ..."
