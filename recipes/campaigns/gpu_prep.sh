#!/usr/bin/env bash
# Before a GPU lease, here, from the repository root: what the GPU machine lacks, in one ignored
# folder that the device tool carries (carry: ["runs/gpu_carry"], ~58 MB with the repository):
#   runs/gpu_carry/whl/      datasets (imported by fggp_hub.data) and the two packages it needs that
#                            the GPU image does not hold; timm at the version CI uses
#   runs/gpu_carry/cifar10/  the shared CIFAR-10 parquet files (../shared does not travel)
set -euo pipefail
python=${PYTHON:-python3}
shared=${FGGP_SHARED:-../shared}
mkdir -p runs/gpu_carry/whl runs/gpu_carry/cifar10
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d runs/gpu_carry/whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 timm==1.0.31
cp -u "$shared"/data/cifar10/plain_text/*.parquet runs/gpu_carry/cifar10/
du -sh runs/gpu_carry/*
# What travels: the tracked + untracked-not-ignored files and the carry, 64 MiB at most together.
# The bundled zoo's compact files (model_cards/*/model.sparse.safetensors, ~19 MB with VGG-19) and
# the CIFAR-10 copy (~54 MB) do not fit together: move the VGG-19 folders out of the checkout for
# the lease (mv model_cards/vgg19-* /tmp/), and put them back after it (git checkout -- model_cards).
tree=$(git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carry=$(du -sb runs/gpu_carry | cut -f1)
echo "working tree $((tree / 1048576)) MiB + carry $((carry / 1048576)) MiB = $(((tree + carry) / 1048576)) MiB (limit 64)"
[ $((tree + carry)) -le $((64 * 1048576)) ] || echo "warning: over the device tool's 64 MiB: see the comment above"
