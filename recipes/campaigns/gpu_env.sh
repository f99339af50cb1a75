# Sourced on the GPU machine by gpu_fire.sh and gpu_poll.sh (from the repository root): the carried
# wheels on PYTHONPATH, the carried CIFAR-10 copy, offline Hub, unbuffered logs; checks the imports.
if [ ! -d /tmp/site/datasets ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    runs/gpu_carry/whl/*.whl || echo "warning: installing the carried wheels failed (run gpu_prep.sh here, carry runs/gpu_carry)"
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export FGGP_CIFAR10_PATH=$PWD/runs/gpu_carry/cifar10 FGGP_DATA_CACHE=/tmp/fggp-data-cache
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import fggp_hub.data, torch, timm, accelerate, datasets, pyarrow, huggingface_hub as h; print('env: torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| timm', timm.__version__, '| accelerate', accelerate.__version__, '| datasets', datasets.__version__, '| pyarrow', pyarrow.__version__, '| hub', h.__version__)" \
  || echo "error: fggp_hub does not import here: see above"
