#!/usr/bin/env bash
# MaskDiT-XL/2 on ImageNet-512, the paper's recipe end to end on one 8-GPU node:
#   latents with flips -> shards -> masked pretraining (2M steps, batch 1024) -> unmasking finetune
#   -> FID-50K with CFG 1.5 and without. Expected (paper): FID 2.50 (CFG) / 10.79 (no CFG).
#   (GPU-hours: not given in REFERENCE.md)
# Usage: IMAGENET=/data/imagenet/train REF=/data/VIRTUAL_imagenet512.npz scripts/imagenet512.sh
# Every stage resumes when re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${IMAGENET:?set IMAGENET to the ImageNet train directory (class sub-folders)}"
: "${REF:?set REF to ADM's VIRTUAL_imagenet512.npz}"
DATA=${DATA:-/data}
VAE=${VAE:-stabilityai/sd-vae-ft-ema}
GPUS=${GPUS:-8}
[ -d "$IMAGENET" ] || { echo "error: IMAGENET=$IMAGENET is not a directory" >&2; exit 1; }
[ -f "$REF" ] || { echo "error: REF=$REF not found" >&2; exit 1; }
mkdir -p "$DATA"
RUN=results/imagenet512-maskdit-xl2
FT=results/imagenet512-maskdit-xl2-finetune
cat <<PLAN
plan ($GPUS GPUs):
  1. extract_latent.py $IMAGENET -> $DATA/in512.lmdb (SD-VAE $VAE, 512px ADM crop, x-flip copies)
  2. lmdb2wds.py -> $DATA/in512-wds (shuffled shards)
  3. train.py configs/train/imagenet512-latent.yaml -> $RUN
  4. train.py configs/finetune/imagenet512-latent-const.yaml -> $FT
  5. eval_latent.py FID-50K, CFG 1.5 and 1.0 -> $FT/fid-cfg1.5.json, $FT/fid-cfg1.0.json
PLAN
launch() { accelerate launch --multi_gpu --num_processes "$GPUS" "$@"; }
launch extract_latent.py --source "imagefolder:$IMAGENET" --resolution 512 --vae "$VAE" \
    --out "$DATA/in512.lmdb" --xflip --batch-size 64
[ -f "$DATA/in512-wds/index.json" ] || python lmdb2wds.py --lmdb "$DATA/in512.lmdb" --out "$DATA/in512-wds"
launch train.py --config configs/train/imagenet512-latent.yaml data.path="$DATA/in512.lmdb"
last=$(ls -d "$RUN"/checkpoints/[0-9]* | sort | tail -n 1)
launch train.py --config configs/finetune/imagenet512-latent-const.yaml data.path="$DATA/in512.lmdb" --init-from "$last"
for cfg in 1.5 1.0; do
  launch eval_latent.py --config configs/test/maskdit-512.yaml --ckpt "$FT" --ref "$REF" \
      cfg_scale=$cfg --out "$FT/fid-cfg$cfg.json"
done
