"""Recipe configuration: YAML files with command-line overrides, checked against a schema.

A recipe is a nested mapping; every key has a default here, every key can be
set in the YAML file and overridden on the command line as ``--section.key VALUE``
(values parsed as YAML, so ``--train.epochs 2`` and ``--pruning.method gmp`` work).
Unknown keys and values of the wrong type are refused with the key's name.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..pruning import METHODS

__all__ = ["RecipeError", "Recipe", "default_export_name", "load_recipe", "parse_overrides", "recipe_to_dict"]


class RecipeError(ValueError):
    """A recipe file or override is invalid (the message names the key)."""


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # "cifar10" (FGGP_CIFAR10_PATH or the Hub), a Hub id, parquet dir/files, or an ImageFolder
    train_split: str = "train"
    test_split: str = "test"
    train_subset: int | None = None  # first N training images (quick runs)
    test_subset: int | None = None
    image_size: int | None = None  # resize non-32x32 datasets on decode
    cache_dir: str | None = None
    augment: bool = True
    streaming: bool = False  # decode on the fly with timm's ImageNet transforms (datasets too big for memory)
    num_workers: int = 4  # decoding workers of the streaming path
    eval_batch_size: int = 256


@dataclass
class TrainConfig:
    epochs: int = 160
    batch_size: int = 64  # global batch, split over processes
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_milestones: list[int] = field(default_factory=lambda: [80, 120])
    lr_gamma: float = 0.1
    label_smoothing: float = 0.1
    channels_last: bool = True
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (bf16 only on GPU: ~50x slower on this CPU)
    gradient_accumulation_steps: int = 1
    eval_every: int = 1  # epochs between test evaluations
    checkpoint_every: int = 1  # epochs between save_state checkpoints (0: only at the end / on Ctrl-C)
    log_every: int = 50  # optimizer steps between tracker logs
    max_steps: int | None = None  # stop early (tests); the schedule still uses the full T


@dataclass
class PruningConfig:
    method: str = "fggp"  # one of fggp_hub.pruning.METHODS, or "none" (dense training)
    final_sparsity: float = 0.95
    initial_sparsity: float = 0.0  # 0.5: ERK sparse start
    interval: int = 2000  # dt in optimizer steps
    end_fraction: float = 0.8  # t_fin / T
    rate: float = 0.5  # r
    anneal_initial: float = 0.5
    anneal_final: float = 0.005
    include_first_conv: bool = False
    check_sync: bool = False  # debug: assert identical masks on all processes at each pruning step


@dataclass
class ExportConfig:
    name: str | None = None  # zoo-style name, e.g. vgg19-cifar10-s95; derived when None
    enabled: bool = True
    hub: str | None = None  # local folder (default) or an endpoint; see fggp_hub.hub
    push_to: str | None = None  # repo id to publish to
    dense_baseline_top1: float | None = None


@dataclass
class Recipe:
    model: str = "fggp_resnet20_cifar"
    model_args: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None  # taken from the dataset when None
    seed: int = 0
    output_dir: str = "runs/quick"
    resume: str | None = None  # a checkpoint folder, or "auto": the newest in output_dir
    init_from: str | None = None  # sparse fine-tuning from a published checkpoint (mask held fixed)
    tracker: str | None = "tensorboard"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> "Recipe":
        p, t = self.pruning, self.train
        if p.method != "none" and p.method not in METHODS:
            raise RecipeError(f"pruning.method: {p.method!r} is not one of {', '.join(METHODS + ('none',))}")
        if not 0.0 < p.final_sparsity < 1.0:
            raise RecipeError(f"pruning.final_sparsity: must be in (0, 1), got {p.final_sparsity}")
        if not 0.0 <= p.initial_sparsity < p.final_sparsity:
            raise RecipeError(f"pruning.initial_sparsity: must be in [0, final_sparsity), got {p.initial_sparsity}")
        if p.interval < 1:
            raise RecipeError(f"pruning.interval: must be >= 1, got {p.interval}")
        if not 0.0 < p.rate <= 1.0:
            raise RecipeError(f"pruning.rate: must be in (0, 1], got {p.rate}")
        for key in ("epochs", "batch_size", "gradient_accumulation_steps"):
            if getattr(t, key) < 1:
                raise RecipeError(f"train.{key}: must be >= 1, got {getattr(t, key)}")
        if t.lr <= 0:
            raise RecipeError(f"train.lr: must be > 0, got {t.lr}")
        if t.mixed_precision not in ("no", "bf16", "fp16"):
            raise RecipeError(f"train.mixed_precision: must be no, bf16 or fp16, got {t.mixed_precision!r}")
        return self


def default_export_name(recipe: Recipe) -> str:
    """The zoo-style name of a run's export when ``export.name`` is unset, e.g. ``vgg19-cifar10-s95-gmp_erk``.

    A zoo name has one variant field, so its parts (method, ERK start) are joined with "_".
    """
    arch = recipe.model.replace("fggp_", "").replace("_bn_cifar", "").replace("_cifar", "")
    dataset = "cifar10" if recipe.data.dataset in ("cifar10", "uoft-cs/cifar10") or "cifar10" in recipe.data.dataset else "custom"
    sparsity = round(recipe.pruning.final_sparsity * 100)
    variant = [] if recipe.pruning.method == "fggp" else [recipe.pruning.method]
    if recipe.pruning.initial_sparsity > 0:
        variant.append("erk")
    return f"{arch}-{dataset}-s{sparsity}" + ("-" + "_".join(variant) if variant else "")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain YAML-friendly data (what is saved with a run)."""
    return dataclasses.asdict(recipe)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Check (and gently coerce int -> float) a value against a field's type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(key, value, arg)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[0] if errors else f"{key}: bad value {value!r}")
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, args[0]) if args else v for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise RecipeError(f"{key}: expected an integer, got {value!r}")
    if hint is str and isinstance(value, bool):  # YAML 1.1 reads a bare no/yes as a bool
        return "yes" if value else "no"
    if hint in (float, str) and not isinstance(value, hint):
        raise RecipeError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise RecipeError(f"unknown recipe key {full!r}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise RecipeError(f"{full}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(current))}")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--train.epochs", "2", "--pruning.method=gmp"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise RecipeError(f"expected an override like --train.epochs 2, got {arg!r}")
        key, eq, raw = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise RecipeError(f"override --{key} needs a value")
            raw = args[i + 1]
            i += 1
        i += 1
        key = key.replace("-", "_")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_recipe(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Defaults <- YAML file <- command-line overrides, validated."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} not found: pass --recipe recipes/<name>.yaml")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise RecipeError(f"recipe file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise RecipeError(f"recipe file {str(path)!r} must hold a mapping of keys, got {type(loaded).__name__}")
        data = loaded or {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = _merge(data, extra)
    recipe = Recipe()
    _apply(recipe, data)
    return recipe.validate()
