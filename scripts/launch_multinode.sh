#!/usr/bin/env bash
# Multi-node launch: run this on every node with the same MAIN_ADDR and NUM_NODES and its own NODE_RANK.
#   MAIN_ADDR=10.0.0.1 NUM_NODES=4 NODE_RANK=0 scripts/launch_multinode.sh train.py --config configs/train/imagenet256-latent.yaml
# The global batch (train.batch_size) stays the same: accumulation rounds adapt to the process count.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MAIN_ADDR:?set MAIN_ADDR to the rank-0 node address}"
: "${NUM_NODES:?set NUM_NODES}"
: "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1)}"
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PORT=${MAIN_PORT:-29500}
[ $# -ge 1 ] || { echo "usage: $0 SCRIPT.py [args...]" >&2; exit 1; }
echo "node $NODE_RANK/$NUM_NODES: $((NUM_NODES * GPUS_PER_NODE)) processes, rendezvous $MAIN_ADDR:$PORT: $*"
# configs/accelerate/multi-node.yaml holds the fixed settings; the per-node values below override its placeholders.
exec accelerate launch --config_file configs/accelerate/multi-node.yaml --multi_gpu --num_machines "$NUM_NODES" --machine_rank "$NODE_RANK" \
    --num_processes "$((NUM_NODES * GPUS_PER_NODE))" --main_process_ip "$MAIN_ADDR" --main_process_port "$PORT" \
    --same_network --rdzv_backend static "$@"
