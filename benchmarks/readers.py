"""Latent reader throughput: samples/s from the LMDB store and from webdataset shards, N DataLoader workers.

Builds a synthetic store of ImageNet-256-shaped records (2 copies × 8 × 32 × 32 float16 moments) unless
--lmdb names a real one, converts it to shards, then times the training readers (batches of --batch).

  python -m benchmarks.readers --num-records 20000 --workers 0 1 2 4 8 --out results/bench-readers
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataio.latent_batches import LatentRecordsByFlip, StreamBatchSampler, loader_kwargs
from dataio.latent_store import LatentLMDB, LatentWriter, release_read_envs
from dataio.shards import iterate_shards, write_shards
from dataio.stream import ShuffledIndexStream


def synthetic_store(path: Path, count: int, shape=(2, 8, 32, 32)) -> None:
    writer = LatentWriter(path)
    rng = np.random.default_rng(0)
    for start in range(0, count, 1000):
        n = min(1000, count - start)
        moments = rng.standard_normal((n, *shape)).astype(np.float16)
        writer.put_batch(list(range(start, start + n)), moments, [int(i % 1000) for i in range(start, start + n)])
    writer.put_meta({"count": count, "shape": list(shape), "dtype": "float16", "vae": "synthetic", "resolution": 256,
                     "xflip": True, "num_classes": 1000, "source": "synthetic", "scaling_factor": 0.18215,
                     "complete": True})
    writer.close()


def time_loader(loader, batches: int) -> float:
    """Samples per second over `batches` batches after 3 warm-up batches."""
    it = iter(loader)
    for _ in range(3):
        next(it)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        moments, _ = next(it)
        seen += len(moments)
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lmdb", help="a real store to read (default: a synthetic one in a temp dir)")
    p.add_argument("--num-records", type=int, default=20_000)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--out", default="results/bench-readers")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = Path(args.lmdb) if args.lmdb else tmp / "synthetic.lmdb"
    if not args.lmdb:
        synthetic_store(store, args.num_records)
    write_shards(store, tmp / "wds", shard_size=2000)
    rows = []
    for workers in args.workers:
        release_read_envs()  # a worker cannot open a path its parent holds open
        kwargs = loader_kwargs(workers, "cpu")
        stream = ShuffledIndexStream(len(LatentLMDB(store)), seed=0, xflip=True)
        lmdb_loader = torch.utils.data.DataLoader(LatentRecordsByFlip(LatentLMDB(store)),
                                                  batch_sampler=StreamBatchSampler(stream, args.batch), **kwargs)
        wds_loader = torch.utils.data.DataLoader(iterate_shards(tmp / "wds", True, 2000, seed=0),
                                                 batch_size=args.batch, **kwargs)
        row = {"workers": workers, "lmdb_samples_per_s": time_loader(lmdb_loader, args.batches),
               "wds_samples_per_s": time_loader(wds_loader, args.batches)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "readers.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| workers | LMDB samples/s | shards samples/s |", "|---|---|---|"]
    lines += [f"| {r['workers']} | {r['lmdb_samples_per_s']:,.0f} | {r['wds_samples_per_s']:,.0f} |" for r in rows]
    (out / "readers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
