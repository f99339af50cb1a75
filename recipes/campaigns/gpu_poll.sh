#!/usr/bin/env bash
# Each later call of a GPU lease while a campaign runs (no carry needed: the machine keeps runs/):
#   bash recipes/campaigns/gpu_poll.sh recipes/campaigns/gpu_zoo_vgg19.yaml [WAIT_S]
# Waits up to WAIT_S (default 540) for the campaign to end, then packs what exists into $OUT.
set -uo pipefail
campaign=${1:?usage: gpu_poll.sh CAMPAIGN.yaml [WAIT_S]}
wait_s=${2:-540}
source recipes/campaigns/gpu_env.sh
python3 recipes/campaign.py status "$campaign" --wait "$wait_s"
python3 recipes/campaign.py collect "$campaign" --out "${OUT:-runs/campaign_out}"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
