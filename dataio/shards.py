"""webdataset shards of latents: writer (from an LMDB store, globally shuffled) and the training reader.

A sample is `s000000042.npy` (moments, (copies, 2C, h, w)) + `s000000042.cls` (label as text); keys carry
no dots. `index.json` lists the shards with their counts and repeats the store's metadata.
"""

import io
import json
from pathlib import Path

import numpy as np
import torch

from dataio.latent_store import LatentLMDB, StoreFormatError, meta_problem, release_read_envs
from utils.atomic import atomic_path, atomic_write_text

INDEX_FILE = "index.json"


def write_shards(lmdb_path: str | Path, out_dir: str | Path, shard_size: int, seed: int = 0) -> dict:
    """All records in one global random order (seeded), `shard_size` per tar. Shards are written under a temp
    name and renamed; the index is written last, after the total count is verified."""
    import webdataset as wds

    store = LatentLMDB(lmdb_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(len(store), generator=torch.Generator().manual_seed(seed)).tolist()
    shards = []
    for shard_no, start in enumerate(range(0, len(order), shard_size)):
        name = f"shard-{shard_no:06d}.tar"
        chunk = order[start:start + shard_size]
        with atomic_path(out_dir / name) as tmp, wds.TarWriter(str(tmp)) as sink:
            for index in chunk:
                moments, label = store[index]
                buf = io.BytesIO()
                np.save(buf, moments.numpy().astype(store.dtype))
                sink.write({"__key__": f"s{index:09d}", "npy": buf.getvalue(), "cls": str(label).encode()})
        shards.append({"name": name, "count": len(chunk)})
    total = sum(s["count"] for s in shards)
    if total != len(store):
        raise RuntimeError(f"wrote {total} samples but the store holds {len(store)}")
    release_read_envs()
    index = {"count": total, "shards": shards, "seed": seed, "meta": store.meta}
    atomic_write_text(out_dir / INDEX_FILE, json.dumps(index, indent=1))
    return index


def read_index(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{shard_dir}: no {INDEX_FILE} (not written by lmdb2wds.py, or unfinished)")
    try:
        index = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError (truncated, empty, garbage) and UnicodeDecodeError (binary)
        raise StoreFormatError(f"{path}: not a JSON shard index ({err}); re-run lmdb2wds.py") from None
    if (problem := index_problem(index)) is not None:
        raise StoreFormatError(f"{path}: {problem}; re-run lmdb2wds.py")
    missing = [s["name"] for s in index["shards"] if not (Path(shard_dir) / s["name"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{shard_dir}: shard {missing[0]} listed in {INDEX_FILE} is missing")
    return index


def index_problem(index) -> str | None:
    """What is wrong with a shard index (its fields, the shards' counts, the store metadata it repeats), or None."""
    if not isinstance(index, dict):
        return f"the index is a JSON {type(index).__name__}, not an object"
    missing = [key for key in ("count", "shards", "seed", "meta") if key not in index]
    if missing:
        return f"the index lacks {', '.join(missing)} (unfinished or not written by lmdb2wds.py)"
    shards = index["shards"]
    if not isinstance(shards, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) and
                                               isinstance(s.get("count"), int) for s in shards):
        return "shards is not a list of {name, count} entries"
    if not isinstance(index["count"], int) or sum(s["count"] for s in shards) != index["count"]:
        return f"count {index['count']!r} is not the sum of the shards' counts ({sum(s['count'] for s in shards)})"
    return meta_problem(index["meta"])


def decode_sample(sample: dict) -> tuple[torch.Tensor, int]:
    """webdataset sample -> (moments float32, label); names the shard and key when a member is corrupt."""
    where = f"shard {sample.get('__url__', '?')} key {sample.get('__key__', '?')}"
    try:
        moments = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        label = int(sample["cls"])
    except (KeyError, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{where}: corrupted sample ({err})") from None
    return torch.from_numpy(moments.astype(np.float32)), label


def iterate_shards(shard_dir: str | Path, resampled: bool, shuffle_buffer: int = 0, seed: int = 0, rank: int = 0):
    """Samples as (moments, label).

    Training (resampled): every DataLoader worker of every process draws shards at random with its own
    deterministic seed (seed, rank, worker, epoch), so processes need no node splitting and the stream never
    ends; a shuffle buffer mixes samples across shards. Verification: every shard once, in order.
    """
    import webdataset as wds

    index = read_index(shard_dir)
    urls = [str(Path(shard_dir) / s["name"]) for s in index["shards"]]
    if resampled:
        def worker_seed() -> int:
            info = torch.utils.data.get_worker_info()
            return rank * 1009 + (info.id if info is not None else 0)

        stages = [wds.ResampledShards(urls, seed=seed, worker_seed=worker_seed, deterministic=True),
                  wds.tarfile_to_samples(handler=wds.reraise_exception), wds.shuffle(shuffle_buffer)]
    else:
        stages = [wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=wds.reraise_exception)]
    return wds.DataPipeline(*stages, wds.map(decode_sample))
