"""Convert a latent LMDB store into webdataset shards in one globally shuffled order.

Example:
  python lmdb2wds.py --lmdb /data/in256.lmdb --out /data/in256-wds --shard-size 10000 --seed 0
Samples are `sNNNNNNNNN.npy` (moments) + `.cls` (label); `index.json` lists shards and counts, written
last after the total is verified against the store.
"""

import argparse
import sys

from dataio.shards import write_shards
from utils.cli import run_command


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lmdb", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--shard-size", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        index = write_shards(args.lmdb, args.out, args.shard_size, args.seed)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"wrote {index['count']} samples in {len(index['shards'])} shards to {args.out}")


if __name__ == "__main__":
    run_command(main)
