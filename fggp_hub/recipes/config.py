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
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import FggpHubError
from ..pruning import METHODS

__all__ = ["RecipeError", "RunError", "Recipe", "default_export_name", "load_recipe", "parse_overrides", "recipe_to_dict"]


class RecipeError(FggpHubError, ValueError):
    """A recipe file or override is invalid (the message names the key)."""


class RunError(FggpHubError, RuntimeError):
    """A valid recipe that cannot run here: the data, the model or the launcher do not fit it (one line, exit 1)."""


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
    # Keep each epoch's last short batch, as the authors' loader does: 160 epochs of 50k images at
    # batch 64 are then T = 782 x 160 = 125,120 steps (spec). Runs recorded without this key used
    # drop_last=True (T = 124,960) and resume that way.
    drop_last: bool = False


@dataclass
class TrainConfig:
    epochs: int = 160
    batch_size: int = 64  # global batch, split over processes
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "step"  # "step": x lr_gamma at each of lr_milestones (spec); "cosine": warmup then cosine to 0
    lr_milestones: list[int] = field(default_factory=lambda: [80, 120])
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warmup from ~0 (cosine schedule; short CPU budgets)
    label_smoothing: float = 0.1
    channels_last: bool = True
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (bf16 only on GPU: ~50x slower on this CPU)
    gradient_accumulation_steps: int = 1
    eval_every: int = 1  # epochs between test evaluations
    checkpoint_every: int = 1  # epochs between save_state checkpoints (0: only at the end / on Ctrl-C)
    checkpoint_every_steps: int = 0  # also every N optimizer steps (0: off): long CPU epochs survive a kill
    keep_checkpoints: int = 2  # newest complete checkpoints kept; older ones of this run are removed
    compile: bool = False  # torch.compile the model (inductor): measured ~10 % faster on a 2-core CPU for VGG-19
    # Progressive resizing: [[fraction of T, image size], ...] - train on smaller images early
    # (cost ~ size^2), full size at the end; test images are never resized. [] = off.
    progressive_resize: list[list[float]] = field(default_factory=list)
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
    overwrite: bool = False  # publish over a repo that holds other weights (its old revision stays loadable)
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
        """Refuse values that would train nothing, mislabel a model or crash later (one line, naming the key)."""
        p, t, d = self.pruning, self.train, self.data

        def need(ok: bool, key: str, rule: str, value: Any) -> None:
            if not ok:
                raise RecipeError(f"{key}: must be {rule}, got {value!r}")

        for key, value in _numbers(self):
            need(math.isfinite(value), key, "a finite number", value)
        if p.method != "none" and p.method not in METHODS:
            raise RecipeError(f"pruning.method: {p.method!r} is not one of {', '.join(METHODS + ('none',))}")
        need(0.0 < p.final_sparsity < 1.0, "pruning.final_sparsity", "in (0, 1)", p.final_sparsity)
        need(0.0 <= p.initial_sparsity < p.final_sparsity, "pruning.initial_sparsity", "in [0, final_sparsity)",
             p.initial_sparsity)
        need(p.interval >= 1, "pruning.interval", ">= 1", p.interval)
        need(0.0 < p.end_fraction <= 1.0, "pruning.end_fraction", "in (0, 1]", p.end_fraction)
        need(0.0 < p.rate <= 1.0, "pruning.rate", "in (0, 1]", p.rate)
        need(0.0 < p.anneal_final <= p.anneal_initial <= 1.0, "pruning.anneal_final/anneal_initial",
             "0 < anneal_final <= anneal_initial <= 1", (p.anneal_final, p.anneal_initial))
        for key in ("epochs", "batch_size", "gradient_accumulation_steps", "eval_every", "log_every",
                    "keep_checkpoints"):
            need(getattr(t, key) >= 1, f"train.{key}", ">= 1", getattr(t, key))
        for key in ("checkpoint_every", "checkpoint_every_steps"):
            need(getattr(t, key) >= 0, f"train.{key}", ">= 0 (0: off)", getattr(t, key))
        need(t.max_steps is None or t.max_steps >= 1, "train.max_steps", ">= 1 (or null: the whole schedule)",
             t.max_steps)
        need(t.lr > 0, "train.lr", "> 0", t.lr)
        need(0.0 <= t.momentum < 1.0, "train.momentum", "in [0, 1)", t.momentum)
        need(t.weight_decay >= 0, "train.weight_decay", ">= 0", t.weight_decay)
        need(0.0 <= t.label_smoothing < 1.0, "train.label_smoothing", "in [0, 1)", t.label_smoothing)
        need(0.0 < t.lr_gamma <= 1.0, "train.lr_gamma", "in (0, 1]", t.lr_gamma)
        need(all(m >= 0 for m in t.lr_milestones), "train.lr_milestones", "epochs >= 0", t.lr_milestones)
        need(t.lr_schedule in ("step", "cosine"), "train.lr_schedule", "step or cosine", t.lr_schedule)
        need(0.0 <= t.warmup_epochs < t.epochs, "train.warmup_epochs", "in [0, epochs)", t.warmup_epochs)
        need(t.mixed_precision in ("no", "bf16", "fp16"), "train.mixed_precision", "no, bf16 or fp16",
             t.mixed_precision)
        for i, stage in enumerate(t.progressive_resize):
            need(len(stage) == 2 and 0.0 <= stage[0] < 1.0 and stage[1] >= 8 and float(stage[1]).is_integer(),
                 f"train.progressive_resize[{i}]", "[fraction of T in [0, 1), image size >= 8]", stage)
        starts = [stage[0] for stage in t.progressive_resize]
        need(starts == sorted(starts), "train.progressive_resize", "in increasing order of fraction", starts)
        need(self.seed >= 0, "seed", ">= 0", self.seed)
        need(self.num_classes is None or self.num_classes >= 1, "num_classes", ">= 1 (or null: from the dataset)",
             self.num_classes)
        for key in ("train_subset", "test_subset"):
            need(getattr(d, key) is None or getattr(d, key) >= 1, f"data.{key}", ">= 1 (or null: all)",
                 getattr(d, key))
        need(d.image_size is None or 8 <= d.image_size <= 4096, "data.image_size", "in [8, 4096] (or null)",
             d.image_size)
        need(d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers)
        need(d.eval_batch_size >= 1, "data.eval_batch_size", ">= 1", d.eval_batch_size)
        need(not d.dataset.strip() == "", "data.dataset", "a dataset name, path or Hub id", d.dataset)
        need(self.export.dense_baseline_top1 is None or 0 <= self.export.dense_baseline_top1 <= 100,
             "export.dense_baseline_top1", "a top-1 in [0, 100]", self.export.dense_baseline_top1)
        return self


def _numbers(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every float in a recipe (nested), with its dotted key: NaN and inf are refused everywhere."""
    out: list[tuple[str, float]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _numbers(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            out.append((f"{prefix}{f.name}", value))
        elif isinstance(value, list):
            flat = [v for item in value for v in (item if isinstance(item, list) else [item])]
            out += [(f"{prefix}{f.name}", v) for v in flat if isinstance(v, float)]
    return out


def default_export_name(recipe: Recipe) -> str:
    """The zoo-style name of a run's export when ``export.name`` is unset, e.g. ``vgg19-cifar10-s95-gmp_erk``.

    A zoo name has one variant field, so its parts (method, ERK start) are joined with "_".
    """
    arch = recipe.model.replace("fggp_", "").replace("_bn_cifar", "").replace("_cifar", "")
    dataset = "cifar10" if recipe.data.dataset in ("cifar10", "uoft-cs/cifar10") or "cifar10" in recipe.data.dataset else "custom"
    from ..hub.zoo import sparsity_tag  # 0.995 -> "99p5" (rounding gave "s100", not a zoo name)

    sparsity = sparsity_tag(recipe.pruning.final_sparsity)
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (a repeated section would silently replace the first)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_recipe(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Defaults <- YAML file <- command-line overrides, validated."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} not found: pass --recipe recipes/<name>.yaml")
        try:
            loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
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
