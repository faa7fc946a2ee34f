#!/usr/bin/env bash
# Distributed training through mmengine's launcher (mmdet's convention):
#   tools/dist_train.sh CONFIG NUM_PROCESSES [tools/train.py ARGS]
# One process per GPU with NCCL; on a machine without a CUDA GPU the
# processes use gloo on the CPU (see docs/training.md).
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT (multi-node / port),
# PYTHON (the interpreter, default: python).
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: $0 CONFIG NUM_PROCESSES [tools/train.py ARGS]" >&2
    exit 2
fi
CONFIG=$1
NUM_PROCESSES=$2
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NUM_PROCESSES" \
    "$TOOLS/train.py" "$CONFIG" --launcher pytorch "${@:3}"
