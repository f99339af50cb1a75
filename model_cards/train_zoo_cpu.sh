#!/bin/bash
# Train the bundled zoo's CPU-budget entries one run at a time (issue 11), each resumable: the six
# ResNet-20 entries (FGGP and GMP at 90/95/98 %), the dense ResNet-20 baseline, then VGG-19 at 95 %.
# Re-running the script continues where it stopped (finished runs have results.json and are skipped).
#
#   RUNS=/work/runs setsid nohup model_cards/train_zoo_cpu.sh >> /work/runs/queue.log 2>&1 &
#
# Then bundle each finished export: python model_cards/publish_zoo.py bundle $RUNS/zoo/<name>/export/<name>
#
# The shipped entries were trained with this ResNet-20 recipe on a GPU instead (one lease,
# recipes/campaigns/gpu_zoo_resnet20_lease.yaml, bf16); this script is the CPU route to the same
# recipe (fp32), and the only route so far to the CPU-budget VGG-19 entry vgg19-cifar10-s95-cpu.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-$ROOT/runs}
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export FGGP_CIFAR10_PATH=${FGGP_CIFAR10_PATH:-$ROOT/../shared/data/cifar10/plain_text}
export FGGP_HUB_HOME=${FGGP_HUB_HOME:-$RUNS/fggp-home}
mkdir -p "$RUNS/zoo"
cd "$RUNS"
run() {  # output folder, then the runner's arguments
  out=$1; shift
  if [ -f "$out/results.json" ]; then echo "skip $out (done)"; return 0; fi
  echo "=== $(date -u +%FT%TZ) start $out"
  nice -n 5 "$PY" "$ROOT/recipes/prune.py" "$@" --output-dir "$out" --resume auto >> "$out.log" 2>&1
  rc=$?; echo "=== $(date -u +%FT%TZ) end $out rc=$rc"
  [ $rc -eq 0 ] || exit $rc
}
for s in 90 95 98; do
  for m in fggp gmp; do
    name=resnet20-cifar10-s$s; [ $m = gmp ] && name=$name-gmp
    run zoo/$name --recipe "$ROOT/recipes/resnet20_cifar10_zoo_cpu.yaml" --pruning.method $m \
        --pruning.final_sparsity 0.$s --export.name $name
  done
done
run zoo/resnet20-cifar10-dense --recipe "$ROOT/recipes/resnet20_cifar10_zoo_cpu.yaml" --pruning.method none \
    --export.enabled false
run vgg19_cifar10_s95_cpu --recipe "$ROOT/recipes/vgg19_cifar10_s95_cpu.yaml"
