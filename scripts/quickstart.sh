#!/usr/bin/env bash
# The embedded default end to end on a CPU: masked pretraining -> unmasking finetune -> samples -> metrics.
# ~10 + 3 + 1 + 2 minutes on 2 CPU cores. Re-running resumes / skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=results/fmnist-maskdit
FT=results/fmnist-maskdit-finetune
echo "plan: pretrain -> $RUN, finetune -> $FT, grid -> $FT/final-grid.png, metrics -> $FT/metrics.json"
python train.py --config configs/train/fashion-mnist.yaml
last=$(ls -d "$RUN"/checkpoints/[0-9]* | sort | tail -n 1)
python train.py --config configs/finetune/fashion-mnist.yaml --init-from "$last"
python generate.py --ckpt "$FT" --num-samples 100 --steps 40 --s-churn 20 --out "$FT/final-grid.png"
[ -f results/fmnist-test-ref.npz ] || python eval_latent.py ref --config configs/test/fashion-mnist.yaml \
    --source fashion_mnist:test --out results/fmnist-test-ref.npz
python eval_latent.py --config configs/test/fashion-mnist.yaml --ckpt "$FT" --ref results/fmnist-test-ref.npz \
    --out "$FT/metrics.json"
