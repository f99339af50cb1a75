"""Constants shared across fggp_hub: dataset statistics, file names and environment variables.

Every environment variable the package reads is named here, with its default, in the manner of
``huggingface_hub.constants``. Values are read when used (not at import), so a variable set after
``import fggp_hub`` (a test's ``monkeypatch.setenv``) still takes effect.
"""
import os
from pathlib import Path

# --------------------------------------------------------------------------- datasets
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Every result computed on the shared copy must carry this label (its pixels are JPEG-degraded).
CIFAR10_JPEG_LABEL = "CIFAR-10 (JPEG-q75 copy)"
CIFAR10_HUB_ID = "uoft-cs/cifar10"

# --------------------------------------------------------------------------- file names
#: A repo folder (what ``fggp_hub.export`` writes).
CONFIG_NAME = "config.json"
DENSE_WEIGHTS_NAME = "model.safetensors"
COMPACT_WEIGHTS_NAME = "model.sparse.safetensors"
CARD_NAME = "README.md"
EVAL_RESULTS_NAME = "eval_results.json"
RECIPE_NAME = "recipe.yaml"
LAYER_PLOT_NAME = "sparsity_per_layer.png"
SCHEDULE_PLOT_NAME = "sparsity_schedule.png"
ONNX_NAME = "model.onnx"
#: Every file name an export writes: the only files a push removes from a remote repo (unless
#: ``delete_others``), and the only ones export replaces in an earlier export folder.
EXPORT_FILES = frozenset({
    CONFIG_NAME, DENSE_WEIGHTS_NAME, COMPACT_WEIGHTS_NAME, CARD_NAME, LAYER_PLOT_NAME, SCHEDULE_PLOT_NAME,
    RECIPE_NAME, EVAL_RESULTS_NAME, ONNX_NAME,
})
#: A training run folder (what ``recipes/prune.py`` writes).
RUN_INFO_NAME = "run_info.json"
RUN_RESULTS_NAME = "results.json"
RESOLVED_RECIPE_NAME = "recipe.resolved.yaml"
#: The user zoo index, under the home directory.
ZOO_INDEX_NAME = "zoo_index.json"

# --------------------------------------------------------------------------- environment variables
#: Root of everything fggp_hub caches or stores locally (default: see :func:`home_dir`).
ENV_HOME = "FGGP_HUB_HOME"
#: Which hub ``push``/``pull``/``load`` use without a ``hub`` argument: "local" (default) or "hf".
ENV_HUB = "FGGP_HUB"
DEFAULT_HUB = "local"
#: Per-request timeout of Hub network calls, in seconds.
ENV_TIMEOUT = "FGGP_HUB_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
#: Attempts per Hub network operation (clamped to 1..10).
ENV_RETRIES = "FGGP_HUB_RETRIES"
DEFAULT_RETRIES = 3
#: A model card template replacing the packaged ``hub/templates/model_card.md``.
ENV_CARD_TEMPLATE = "FGGP_HUB_CARD_TEMPLATE"
#: The user zoo index (default: ``<home>/zoo_index.json``).
ENV_ZOO_INDEX = "FGGP_ZOO_INDEX"
#: Replaces the zoo index shipped with the package (an empty file: no packaged names).
ENV_ZOO_PACKAGE_INDEX = "FGGP_ZOO_PACKAGE_INDEX"
#: Folder holding the bundled zoo's repo folders (default: a checkout's ``model_cards/``).
ENV_BUNDLED_ZOO = "FGGP_BUNDLED_ZOO"
#: A local copy of CIFAR-10 (folder or parquet files); default: the Hub id ``uoft-cs/cifar10``.
ENV_CIFAR10_PATH = "FGGP_CIFAR10_PATH"
#: Folder of decoded dataset caches (default: ``<home>/data``).
ENV_DATA_CACHE = "FGGP_DATA_CACHE"
#: "0"/"false"/"no"/"off" disables the native sparse-conv kernel (default: on where it builds).
ENV_NATIVE = "FGGP_HUB_NATIVE"
#: Folder of compiled native kernels (default: ``<home>/native``).
ENV_NATIVE_CACHE = "FGGP_HUB_NATIVE_CACHE"
#: "0" leaves glibc's malloc settings alone (sparse inference keeps freed activations by default).
ENV_MALLOC_TUNE = "FGGP_HUB_MALLOC_TUNE"


def home_dir() -> Path:
    """``$FGGP_HUB_HOME``, else ``$XDG_CACHE_HOME/fggp_hub``, else ``~/.cache/fggp_hub``.

    The local hub, the user zoo index, the data cache and the native kernels live here.
    """
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache")
    return Path(base).expanduser() / "fggp_hub"
