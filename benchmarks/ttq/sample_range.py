"""Do a pixel model's raw samples leave the data range, and does clipping x̂0 change that? (issue #12, part 2)

DDPM's ancestral sampler in Ho et al.'s code clamps the x̂0 estimate to [−1, 1] at every step; without it, an
ε-prediction model's x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t can land far outside the data range, and the final clamp
to uint8 turns those pixels into saturated blocks that FD sees. This samples a run's EMA snapshots exactly as the
time-to-quality evaluation does (same sampler, n, seeds and classes; `protocol.eval_config`), once per row
given (e.g. `unet_ddpm` with clipping and `unet_ddpm_noclip` without, on the same snapshots), and reports, before
the final clamp, the share of pixels above 1 and below −1, and after it the share at white (255) and black (0),
with the reference images' shares beside them.

  python -m benchmarks.ttq sample-range --kimg 24.576 --rows unet_ddpm unet_ddpm_noclip --seeds 0 --grid-index 0 5

Writes docs/benchmarks/ttq/<protocol>/sample_range/<stamp>.json and prints a table.
"""

import argparse
import json
import time

import torch

from benchmarks.ttq.protocol import (REPO, Protocol, add_location_args, add_protocol_args, eval_config, protocol_from,
                                     run_dir_of, snapshot_kimg, snapshots)
from benchmarks.ttq.rows import ROWS


def range_stats(images: torch.Tensor) -> dict:
    """images (N, C, H, W) in the data's [−1, 1] scale, before any clamp -> shares of pixels out of range and at
    the two ends once quantised to uint8 as the evaluation does."""
    from dataio.image_io import to_uint8

    x, quantised = images.double(), to_uint8(images)  # quantised: (N, H, W, C) uint8, as the evaluation sees it
    return {"above_1": float((x > 1).double().mean()), "below_minus_1": float((x < -1).double().mean()),
            "white": float((quantised == 255).mean()), "black": float((quantised == 0).mean()),
            "mean": float(x.mean()), "std": float(x.std())}


def reference_stats(source: str, count: int = 2000) -> dict:
    """The same shares for the first `count` reference images (an eval_latent.py source, e.g. fashion_mnist:test)."""
    from evaluation.evaluate import source_batches

    batches, total = [], 0
    for images, _ in source_batches(source, 500):  # uint8 (B, C, H, W)
        batches.append(images)
        total += len(images)
        if total >= count:
            break
    return range_stats(torch.cat(batches)[:count].double() / 127.5 - 1)


@torch.no_grad()
def sample_snapshot(path, proto: Protocol, seed: int, overrides: list[str]) -> torch.Tensor:
    """The evaluation's samples of one snapshot, before the final clamp. -> (n, C, H, W)."""
    from dataio.autoencoder import Decoder
    from diffusion.generation import generate, labels_for_seeds
    from diffusion.network import load_for_sampling

    cfg, device = eval_config(proto, seed, overrides), torch.device("cpu")
    net, meta = load_for_sampling(path, device)
    seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.num_samples))
    labels = labels_for_seeds(seeds, net.backbone.spec.num_classes)
    batches = generate(net, Decoder(meta["data"], device), seeds, labels, cfg.sampling, cfg.batch_gpu, device)
    return torch.cat([images for _, _, images in batches])


def markdown(result: dict) -> str:
    cols = ("above_1", "below_minus_1", "white", "black", "mean", "std")
    lines = ["| row | seed | kimg | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols),
             "| reference images | | | " + " | ".join(f"{result['reference'][c]:.4f}" for c in cols) + " |"]
    for r in result["samples"]:
        lines.append(f"| {r['row']} | {r['seed']} | {r['kimg']:g} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ttq sample-range", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_protocol_args(p)
    p.add_argument("--rows", nargs="+", required=True, choices=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--grid-index", type=int, nargs="+", default=[0, -1], help="grid indices of the snapshots sampled")
    add_location_args(p)
    args = p.parse_args(argv)
    proto = protocol_from(args)
    work = (REPO / args.work / proto.work_tag()).resolve()
    torch.set_num_threads(proto.threads)
    runs = {(name, seed): snapshots(run_dir_of(work, name, seed), proto)  # checked before any sampling
            for name in args.rows for seed in args.seeds}
    result = {"protocol": proto.tag(), "reference": reference_stats(args.reference), "samples": []}
    for (name, seed), found in runs.items():
        for point in args.grid_index:
            images = sample_snapshot(found[point], proto, seed, ROWS[name].eval_overrides)
            result["samples"].append({"row": name, "seed": seed, "kimg": snapshot_kimg(found[point]),
                                      **range_stats(images)})
            print(json.dumps(result["samples"][-1]), flush=True)
    out = REPO / args.results / proto.tag() / "sample_range" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
