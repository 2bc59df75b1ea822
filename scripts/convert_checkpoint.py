"""Convert this suite's old pickled checkpoints and snapshots (format 1: training_state.pt + ema.pt, ema-*.pt) to
the current safetensors format. Unpickling runs code, so the suite never does it implicitly: run this only on
files you made yourself.

  python scripts/convert_checkpoint.py results/<run>            # every checkpoint dir and snapshot of a run
  python scripts/convert_checkpoint.py results/<run>/snapshots/ema-0000032.000.pt
The pickled originals are left in place; the converted files are written beside them.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.snapshot import save_snapshot, save_weights, strip_compile_prefix  # noqa: E402
from training import checkpoint as ckpt  # noqa: E402
from utils.atomic import atomic_torch_save, atomic_write_text  # noqa: E402
from utils.cli import run_command  # noqa: E402


def snapshot_parts(old: dict) -> tuple[dict, dict]:
    meta = {k: v for k, v in old.items() if k not in ("ema", "format")}
    return strip_compile_prefix(old["ema"]), meta


def convert_snapshot(path: Path) -> Path:
    old = torch.load(path, map_location="cpu", weights_only=False)  # explicit, user-requested unpickling
    out = path.with_suffix(".safetensors")
    save_snapshot(out, *snapshot_parts(old))
    return out


def convert_checkpoint_dir(old_dir: Path) -> None:
    state = torch.load(old_dir / "training_state.pt", map_location="cpu", weights_only=False)
    snapshot = torch.load(old_dir / "ema.pt", map_location="cpu", weights_only=False)
    net_state = strip_compile_prefix(state.pop("net"))
    for rng in state["rng"]:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = [name, [int(k) for k in keys], pos, has_gauss, cached]
    save_weights(old_dir / ckpt.MODEL_FILE, net_state)
    save_snapshot(old_dir / "ema.safetensors", *snapshot_parts(snapshot))
    (old_dir / "training_state.pt").rename(old_dir / "training_state.pickled.pt")
    atomic_torch_save(state, old_dir / ckpt.STATE_FILE)
    torch.load(old_dir / ckpt.STATE_FILE, weights_only=True)  # the converted state loads without unpickling code
    sums = {name: ckpt.sha256(old_dir / name) for name in (ckpt.MODEL_FILE, "ema.safetensors", ckpt.STATE_FILE)}
    atomic_write_text(old_dir / ckpt.CHECKSUM_FILE, json.dumps(sums, indent=1) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run dir, checkpoint dir, or snapshot .pt file")
    return p.parse_args(argv)


def main(argv=None) -> None:
    path = Path(parse_args(argv).path)
    if path.is_file():
        print(f"wrote {convert_snapshot(path)}")
        return
    dirs = [path] if (path / "ema.pt").is_file() else sorted((path / "checkpoints").glob("[0-9]*"))
    for d in dirs:
        if (d / "ema.pt").is_file() and not (d / ckpt.CHECKSUM_FILE).is_file():
            convert_checkpoint_dir(d)
            print(f"converted checkpoint {d}")
    for snap in sorted((path / "snapshots").glob("ema-*.pt")):
        print(f"wrote {convert_snapshot(snap)}")


if __name__ == "__main__":
    run_command(main)
