#!/usr/bin/env bash
# MaskDiT-XL/2 on ImageNet-256, the paper's recipe end to end on one 8-GPU node:
#   latents with flips -> shards -> masked pretraining (2M steps, batch 1024) -> unmasking finetune
#   -> FID-50K with CFG 1.5 and without. Expected (paper): FID 2.28 (CFG 1.5) / 5.69 (no CFG),
#   ~260 h on 8xA100 for pretraining.
# Usage: IMAGENET=/data/imagenet/train REF=/data/VIRTUAL_imagenet256_labeled.npz scripts/imagenet256.sh
# Every stage resumes when re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${IMAGENET:?set IMAGENET to the ImageNet train directory (class sub-folders)}"
: "${REF:?set REF to ADM's VIRTUAL_imagenet256_labeled.npz}"
DATA=${DATA:-/data}
VAE=${VAE:-stabilityai/sd-vae-ft-ema}
GPUS=${GPUS:-8}
[ -d "$IMAGENET" ] || { echo "error: IMAGENET=$IMAGENET is not a directory" >&2; exit 1; }
[ -f "$REF" ] || { echo "error: REF=$REF not found" >&2; exit 1; }
mkdir -p "$DATA"
RUN=results/imagenet256-maskdit-xl2
FT=results/imagenet256-maskdit-xl2-finetune
cat <<PLAN
plan ($GPUS GPUs):
  1. extract_latent.py $IMAGENET -> $DATA/in256.lmdb (SD-VAE $VAE, 256px ADM crop, x-flip copies)
  2. lmdb2wds.py -> $DATA/in256-wds (shuffled shards)
  3. train.py configs/train/imagenet256-latent.yaml -> $RUN
  4. train.py configs/finetune/imagenet256-latent-const.yaml -> $FT
  5. eval_latent.py FID-50K, CFG 1.5 and 1.0 -> $FT/fid-cfg1.5.json, $FT/fid-cfg1.0.json
PLAN
launch() { accelerate launch --multi_gpu --num_processes "$GPUS" "$@"; }
launch extract_latent.py --source "imagefolder:$IMAGENET" --resolution 256 --vae "$VAE" \
    --out "$DATA/in256.lmdb" --xflip --batch-size 64
[ -f "$DATA/in256-wds/index.json" ] || python lmdb2wds.py --lmdb "$DATA/in256.lmdb" --out "$DATA/in256-wds"
launch train.py --config configs/train/imagenet256-latent.yaml data.path="$DATA/in256.lmdb"
last=$(ls -d "$RUN"/checkpoints/[0-9]* | sort | tail -n 1)
launch train.py --config configs/finetune/imagenet256-latent-const.yaml data.path="$DATA/in256.lmdb" --init-from "$last"
for cfg in 1.5 1.0; do
  launch eval_latent.py --config configs/test/maskdit-256.yaml --ckpt "$FT" --ref "$REF" \
      cfg_scale=$cfg --out "$FT/fid-cfg$cfg.json"
done
