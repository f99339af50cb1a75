#!/usr/bin/env bash
# The whole of a short GPU lease in ONE device call (carry ["runs/gpu_carry"], timeout_s 600):
#   bash recipes/campaigns/gpu_lease.sh recipes/campaigns/gpu_zoo_vgg19_lease.yaml [TRAIN_S] [WAIT_S]
# Sizes the runs to TRAIN_S seconds of training on this device (campaign.py size), starts them
# detached, waits up to WAIT_S for them to finish, and packs what exists into $OUT. If some are
# still running, the next call (within the machine's 30 s idle window) is gpu_poll.sh CAMPAIGN N.
# SIZE_ARGS adds options of `campaign.py size` (e.g. --min-epochs 15), COLLECT_ARGS of `collect`.
set -uo pipefail
campaign=${1:?usage: gpu_lease.sh CAMPAIGN.yaml [TRAIN_S] [WAIT_S]}
train_s=${2:-380}
wait_s=${3:-480}
out=${OUT:-runs/campaign_out}
t0=$(date +%s)
source recipes/campaigns/gpu_env.sh
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
sets=$(python3 recipes/campaign.py size "$campaign" --seconds "$train_s" ${SIZE_ARGS:-} | tail -n 1)
echo "sized in $(( $(date +%s) - t0 )) s: $sets"
python3 recipes/campaign.py start "$campaign" $sets
left=$(( wait_s - ($(date +%s) - t0) ))
python3 recipes/campaign.py status "$campaign" $sets --wait $(( left > 0 ? left : 1 ))
python3 recipes/campaign.py collect "$campaign" $sets --out "$out" ${COLLECT_ARGS:-}
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
echo "lease script took $(( $(date +%s) - t0 )) s"
