"""Train a class-conditional MaskDiT / DiT: masked pretraining or unmasking finetune, one process or many.

Examples:
  python train.py --config configs/train/fashion-mnist.yaml
  python train.py --config configs/finetune/fashion-mnist.yaml --init-from results/fmnist/checkpoints/000001000
  accelerate launch --multi_gpu train.py --config configs/train/imagenet256-latent.yaml train.batch_gpu=128
Re-running the same command resumes from the newest checkpoint of the run directory.
"""

import argparse
import sys

from dataio.latent_batches import DataRecordError
from dataio.latent_store import StoreFormatError
from dataio.training_data import DataMismatchError
from training.config import ConfigError, load_config
from models.build import WeightsMismatchError
from models.snapshot import SnapshotError
from training.checkpoint import CheckpointError, RunLockedError
from training.loop import NonFiniteError, train
from utils.atomic import DiskFullError, UnwritableError
from utils.cli import run_command


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (may name a `base:` YAML)")
    parser.add_argument("--init-from", help="start a new run from this checkpoint directory's weights and EMA")
    parser.add_argument("--stop-after-kimg", type=float,
                        help="checkpoint and exit once this many kimg are done (re-run to continue)")
    parser.add_argument("--stop-after-min", type=float,
                        help="checkpoint and exit after this many minutes of training (re-run to continue)")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value (OmegaConf dotlist)")
    return parser.parse_intermixed_args(argv)  # key=value overrides may come before or after options


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg, init_from=args.init_from, stop_after_kimg=args.stop_after_kimg,
              stop_after_min=args.stop_after_min)
    except (ConfigError, DataMismatchError, FileNotFoundError, NonFiniteError, CheckpointError, RunLockedError,
            SnapshotError, WeightsMismatchError, DataRecordError, DiskFullError, UnwritableError,
            StoreFormatError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    run_command(main)
