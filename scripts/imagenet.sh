#!/usr/bin/env bash
# MaskDiT-XL/2 on ImageNet at 256 or 512, the paper's recipe end to end on one 8-GPU node:
#   latents with flips -> shards -> masked pretraining -> unmasking finetune -> FID-50K with CFG and without.
# Paper: 256: FID 2.28 (CFG 1.5) / 5.69 (no CFG), ~260 h on 8xA100 for 2M steps; 512: 2.50 / 10.79.
# Usage: RES=256 IMAGENET=/data/imagenet/train REF=/data/VIRTUAL_imagenet256_labeled.npz scripts/imagenet.sh
#        RES=512 IMAGENET=/data/imagenet/train REF=/data/VIRTUAL_imagenet512.npz scripts/imagenet.sh
# Every stage resumes when re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${IMAGENET:?set IMAGENET to the ImageNet train directory (class sub-folders)}"
: "${REF:?set REF to ADM's reference batch (VIRTUAL_imagenet256_labeled.npz or VIRTUAL_imagenet512.npz)}"
RES=${RES:-256}
[ "$RES" = 256 ] || [ "$RES" = 512 ] || { echo "error: RES must be 256 or 512, not $RES" >&2; exit 1; }
DATA=${DATA:-/data}
VAE=${VAE:-stabilityai/sd-vae-ft-ema}
GPUS=${GPUS:-8}
[ -d "$IMAGENET" ] || { echo "error: IMAGENET=$IMAGENET is not a directory" >&2; exit 1; }
[ -f "$REF" ] || { echo "error: REF=$REF not found" >&2; exit 1; }
mkdir -p "$DATA"
LATENTS=$DATA/in$RES.lmdb
RUN=results/imagenet$RES-maskdit-xl2
FT=results/imagenet$RES-maskdit-xl2-finetune
cat <<PLAN
plan ($GPUS GPUs, ${RES}px):
  1. extract_latent.py $IMAGENET -> $LATENTS (SD-VAE $VAE, ADM crop, x-flip copies)
  2. lmdb2wds.py -> $DATA/in$RES-wds (shuffled shards, for data.source=wds)
  3. train.py configs/train/imagenet$RES-latent.yaml -> $RUN
  4. train.py configs/finetune/imagenet$RES-latent-const.yaml -> $FT
  5. eval_latent.py FID-50K, CFG 1.5 and 1.0 -> $FT/fid-cfg1.5.json, $FT/fid-cfg1.0.json
PLAN
launch() { accelerate launch --multi_gpu --num_processes "$GPUS" "$@"; }
launch extract_latent.py --source "imagefolder:$IMAGENET" --resolution "$RES" --vae "$VAE" \
    --out "$LATENTS" --xflip --batch-size 64
[ -f "$DATA/in$RES-wds/index.json" ] || python lmdb2wds.py --lmdb "$LATENTS" --out "$DATA/in$RES-wds"
launch train.py --config "configs/train/imagenet$RES-latent.yaml" data.path="$LATENTS"
last=$(ls -d "$RUN"/checkpoints/[0-9]* | sort | tail -n 1)
launch train.py --config "configs/finetune/imagenet$RES-latent-const.yaml" data.path="$LATENTS" --init-from "$last"
for cfg in 1.5 1.0; do
  launch eval_latent.py --config "configs/test/maskdit-$RES.yaml" --ckpt "$FT" --ref "$REF" \
      sampling.cfg_scale=$cfg --out "$FT/fid-cfg$cfg.json"
done
