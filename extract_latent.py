"""Encode a dataset into VAE posterior moments (LMDB, or webdataset shards with --format wds).

Examples:
  python extract_latent.py --source imagefolder:/data/imagenet/train --resolution 256 \\
         --vae stabilityai/sd-vae-ft-ema --out /data/in256.lmdb --xflip
  accelerate launch --multi_gpu extract_latent.py --source imagefolder:/data/imagenet/train --resolution 256 \\
         --vae stabilityai/sd-vae-ft-ema --out /data/in256.lmdb --xflip --batch-size 64
  python extract_latent.py --source fashion_mnist:train --resolution 32 --vae ./my-vae --out fm.lmdb
Sources (dataio/image_sources.py, the same names as eval_latent.py): imagefolder:DIR, folder:DIR (PNGs),
fashion_mnist[:SPLIT[:DIR]] (32×32 zero-padded, as trained on), cifar10[:SPLIT[:DIR]] (downloaded when online),
npz:FILE (arr_0 uint8 NHWC, arr_1 labels). Images get ADM's centre crop; grayscale becomes RGB.
An interrupted extraction resumes by re-running the same command; no record is written twice.
"""

import argparse
import shutil
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from dataio.extract import ExtractOptions, extract
from dataio.shards import write_shards
from utils.cli import run_command
from utils.distributed import release_process_group


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True)
    p.add_argument("--out", required=True, help="LMDB directory, or the shard directory with --format wds")
    p.add_argument("--vae", required=True, help="diffusers AutoencoderKL: local directory or hub id")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--xflip", action="store_true", help="also store the moments of the mirrored image")
    p.add_argument("--batch-size", type=int, default=32, help="images per VAE batch and process")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored moments dtype")
    p.add_argument("--format", default="lmdb", choices=["lmdb", "wds"])
    p.add_argument("--shard-size", type=int, default=10_000, help="samples per shard (--format wds)")
    p.add_argument("--seed", type=int, default=0, help="shard order seed (--format wds)")
    p.add_argument("--stop-after-batches", type=int, help="encode at most this many batches now (resume later)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    state = PartialState(cpu=not torch.cuda.is_available())  # torchrun on a CPU machine: gloo
    out = Path(args.out)
    lmdb_path = out if args.format == "lmdb" else out / ".staging.lmdb"
    opts = ExtractOptions(args.source, str(lmdb_path), args.vae, args.resolution, args.xflip, args.batch_size,
                          args.dtype, args.stop_after_batches)
    try:
        meta = extract(opts, state)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    if not state.is_main_process:
        return
    if not meta.get("complete"):
        print(f"stopped early; re-run the same command to finish {out}")
        return
    if args.format == "wds":
        index = write_shards(lmdb_path, out, args.shard_size, args.seed)
        shutil.rmtree(lmdb_path)
        print(f"wrote {index['count']} samples in {len(index['shards'])} shards to {out}")
    else:
        print(f"{out}: {meta['count']} records of shape {meta['shape']} ({meta['dtype']}), "
              f"scaling factor {meta['scaling_factor']}")


if __name__ == "__main__":
    run_command(main, release_process_group)
