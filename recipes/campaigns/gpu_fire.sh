#!/usr/bin/env bash
# First call of a GPU lease (device tool, from the repository root, carry ["runs/gpu_carry"]):
#   bash recipes/campaigns/gpu_fire.sh recipes/campaigns/gpu_zoo_vgg19.yaml [WAIT_S]
# Probes the step time (eager vs torch.compile, then the campaign's N workers of the faster), starts it
# detached with the faster setting, waits up to WAIT_S (default 300), and packs what exists into $OUT.
# Every later call: bash recipes/campaigns/gpu_poll.sh CAMPAIGN 540. PROBE_ARGS replaces the probe's options.
set -uo pipefail
campaign=${1:?usage: gpu_fire.sh CAMPAIGN.yaml [WAIT_S]}
wait_s=${2:-300}
out=${OUT:-runs/campaign_out}
source recipes/campaigns/gpu_env.sh
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.max.sm --format=csv,noheader
started=$(date +%s)
python3 recipes/campaign.py probe --campaign "$campaign" ${PROBE_ARGS:---modes eager,default --steps 200 --warmup 30 --timeout 240}
echo "probe took $(( $(date +%s) - started )) s"
python3 recipes/campaign.py start "$campaign" --use-probe
python3 recipes/campaign.py status "$campaign" --wait "$wait_s"
python3 recipes/campaign.py collect "$campaign" --out "$out"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
