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
