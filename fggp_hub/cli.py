"""``fggp-hub``: the command line over the public API (thin: parsing, printing, exit codes).

    fggp-hub list                                    # the zoo: name, backbone, sparsity, accuracy, size
    fggp-hub list --leaderboard                      # methods compared per backbone and sparsity
    fggp-hub list --leaderboard --output model_cards/ZOO.md
    fggp-hub info vgg19-cifar10-s95                  # card essentials and per-layer sparsity
    fggp-hub pull me/vgg19-cifar10-s95 --hub hf
    fggp-hub push out/vgg19-cifar10-s95 me/vgg19-cifar10-s95
    fggp-hub export runs/quick_cpu out/resnet20      # a training run (or a safetensors file) -> repo folder
    fggp-hub eval vgg19-cifar10-s95 --check          # measured vs the card, exit 1 when they differ
    fggp-hub card out/vgg19-cifar10-s95              # re-render README.md of an export folder

Every command takes --hub (a local hub folder, 'local', 'hf' or an http(s) endpoint;
default $FGGP_HUB or the local hub under $FGGP_HUB_HOME) and --json (machine-readable
output on stdout). Errors are one line on stderr, "error: ...", with exit code 1;
usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .constants import DENSE_WEIGHTS_NAME, RESOLVED_RECIPE_NAME, RUN_RESULTS_NAME
from .errors import FggpHubError
from .version import __version__

EXIT_USER_ERROR = 1


class CliError(FggpHubError):
    """A user error found by the command line itself (a missing option, a bad value)."""


# =============================================================================== parser
_EXAMPLES = {
    "list": """examples:
  fggp-hub list                          # every zoo name, with what is known locally
  fggp-hub list 'vgg19-*' --json         # a glob over names; JSON for scripts
  fggp-hub list --fetch                  # download the missing cards (config.json, README.md) first
  fggp-hub list --leaderboard            # top-1 of each method per backbone and sparsity
  fggp-hub list --leaderboard --folder runs/study   # compare local export folders too
  fggp-hub list --leaderboard --markdown --output model_cards/ZOO.md""",
    "info": """examples:
  fggp-hub info vgg19-cifar10-s95
  fggp-hub info me/tiny@3f2a9c1 --hub ~/my-hub --json
  fggp-hub info out/vgg19-cifar10-s95    # an export folder""",
    "pull": """examples:
  fggp-hub pull vgg19-cifar10-s95        # a zoo name (its pinned revision)
  fggp-hub pull me/vgg19-cifar10-s95 --revision main --hub hf
  HF_HUB_OFFLINE=1 fggp-hub pull me/vgg19-cifar10-s95 --hub hf   # from the cache only""",
    "push": """examples:
  fggp-hub push out/vgg19-cifar10-s95 me/vgg19-cifar10-s95              # the local hub
  fggp-hub push out/vgg19-cifar10-s95 me/vgg19-cifar10-s95 --hub hf     # huggingface.co (HF_TOKEN)""",
    "export": """CHECKPOINT is a training run folder of recipes/prune.py (recipe.resolved.yaml,
results.json, checkpoints/step_N/model.safetensors; the newest checkpoint is used),
one of its step_N checkpoint folders, or a plain safetensors state_dict with --model ARCH.
From a run, the folder is the one the run itself exports at its end (same weights,
sparsity block, recipe and results).

examples:
  fggp-hub export runs/quick_cpu out/resnet20-cifar10-s90
  fggp-hub export runs/quick_cpu/checkpoints/checkpoint_3 out/epoch4 --name resnet20-cifar10-s90-e4
  fggp-hub export weights.safetensors out/mine --model fggp_resnet20_cifar --method gmp --results results.json
  fggp-hub export runs/quick_cpu out/resnet20 --push-to me/resnet20-cifar10-s90 --hub hf""",
    "eval": """examples:
  fggp-hub eval vgg19-cifar10-s95                      # full test set, card vs measured
  fggp-hub eval me/tiny --num-images 512 --no-latency --check
  fggp-hub eval me/tiny --check --tolerance 0.2 --tolerance sparsity=1e-6
  fggp-hub eval out/vgg19-cifar10-s95 --output results.json --update-card""",
    "card": """examples:
  fggp-hub card out/vgg19-cifar10-s95                  # after editing eval_results.json or the template
  fggp-hub card out/vgg19-cifar10-s95 --repo-id me/vgg19-cifar10-s95""",
    "onnx": """examples:
  fggp-hub onnx resnet20-cifar10-s95 resnet20-s95.onnx       # a zoo name: dynamic batch, BatchNorm folded
  fggp-hub onnx out/vgg19-cifar10-s95 vgg19.onnx --batch-size 1""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fggp-hub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fggp-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EXAMPLES.get(name), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--hub", default=None, help="local hub folder, 'local', 'hf' or an http(s) endpoint (default: $FGGP_HUB or the local hub)")
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        return p

    p = add("list", "list the zoo: name, backbone, method, sparsity, top-1 accuracy and file sizes")
    p.add_argument("pattern", nargs="?", default=None, help="glob over zoo names, e.g. 'vgg19-*'")
    p.add_argument("--fetch", action="store_true", help="download the cards of repos not available locally (small files only)")
    p.add_argument("--leaderboard", action="store_true", help="compare methods per backbone and sparsity from the cards' results")
    p.add_argument("--folder", action="append", default=[], metavar="PATH",
                   help="also include export folders (or folders containing them); repeatable")
    p.add_argument("--markdown", action="store_true", help="print model_cards/ZOO.md (models table and leaderboard) as markdown")
    p.add_argument("--output", default=None, metavar="PATH", help="write the markdown to PATH atomically (implies --markdown)")

    p = add("info", "load a model (verifying hashes and sparsity) and print its card's essentials and per-layer sparsity")
    p.add_argument("name", help="zoo name, org/name[@revision] or an export folder")
    p.add_argument("--revision", default=None)
    p.add_argument("--dense", action="store_true", help="verify model.safetensors instead of the compact file")
    p.add_argument("--force-download", action="store_true", help="fetch again even if cached (a damaged cached file)")

    p = add("pull", "download a model repo (into the huggingface_hub cache for remote hubs) and print its folder")
    p.add_argument("name", help="zoo name or org/name[@revision]")
    p.add_argument("--revision", default=None)
    p.add_argument("--force-download", action="store_true", help="fetch again even if cached (a damaged cached file)")

    p = add("push", "publish an exported folder as one commit")
    p.add_argument("folder")
    p.add_argument("repo_id")
    p.add_argument("--revision", default="main", help="branch to commit to (default: main)")
    p.add_argument("--message", default=None, help="commit message")
    p.add_argument("--private", action="store_true", help="create the repo private (remote hubs)")
    p.add_argument("--overwrite", action="store_true", help="publish over another model already on that branch (its commit stays addressable)")
    p.add_argument("--delete-others", action="store_true", help="also delete remote files export does not write (LICENSE, other formats)")

    p = add("export", "export a training checkpoint as a Hub repo folder (timm layout, compact file, model card)")
    p.add_argument("checkpoint", help="run folder, a checkpoints/step_N folder, or a .safetensors state_dict (with --model)")
    p.add_argument("out_dir")
    p.add_argument("--model", default=None, metavar="ARCH", help="timm architecture (required for a plain safetensors file)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N", help="classes of the head (default: read off the weights)")
    p.add_argument("--step", type=int, default=None, metavar="N", help="use the checkpoint of optimizer step N of a run (default: the newest)")
    p.add_argument("--name", default=None, help="zoo-style name (default: the run's export.name, or derived)")
    p.add_argument("--variant", default=None, help="suffix of a derived name, e.g. erk")
    p.add_argument("--method", default=None, help="pruning method for the card (plain safetensors files)")
    p.add_argument("--dataset", default=None, help="dataset label for the card (default: the run's, or the shared CIFAR-10 copy)")
    p.add_argument("--dense-top1", type=float, default=None, metavar="PCT", help="top-1 (%%) of the dense baseline, for the card")
    p.add_argument("--results", default=None, metavar="JSON", help="results file (default: the run's results.json)")
    p.add_argument("--recipe", default=None, metavar="YAML", help="recipe to attach (plain safetensors files)")
    p.add_argument("--total-steps", type=int, default=None, metavar="T", help="optimizer steps of the run, if they cannot be worked out")
    p.add_argument("--command", default=None, dest="train_command", metavar="CMD", help="training command line for the card")
    p.add_argument("--repo-id", default=None, help="where the folder will be pushed (for the card's instructions)")
    p.add_argument("--push-to", default=None, metavar="REPO_ID", help="also push the folder to this repo on --hub")
    p.add_argument("--overwrite-repo", action="store_true", help="with --push-to: publish over another model already in that repo")
    p.add_argument("--no-compact", action="store_true", help="do not write model.sparse.safetensors")
    p.add_argument("--no-overwrite", action="store_true", help="refuse to replace an existing export at OUT_DIR")

    p = add("eval", "evaluate a model and compare every metric with its card")
    p.add_argument("name", help="zoo name, org/name[@revision] or an export folder")
    p.add_argument("--revision", default=None)
    p.add_argument("--dataset", default="cifar10", help="cifar10 (FGGP_CIFAR10_PATH or the Hub), a Hub id or a local folder")
    p.add_argument("--split", default="test")
    p.add_argument("--num-images", type=int, default=None, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: the best available)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency and throughput measurements")
    p.add_argument("--check", action="store_true", help="exit 1 when a metric differs from the card beyond its tolerance")
    p.add_argument("--tolerance", action="append", default=[], metavar="[METRIC=]VALUE",
                   help="allowed |card - measured|: a bare number for top1/top5 (accuracy points), or METRIC=VALUE; repeatable")
    p.add_argument("--output", default=None, metavar="JSON", help="save the measured results to this file")
    p.add_argument("--update-card", action="store_true", help="write the measured results into the model's card")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("card", "re-render README.md of an export folder from its config.json, eval_results.json and recipe.yaml")
    p.add_argument("folder")
    p.add_argument("--repo-id", default=None, help="repo id for the loading instructions (default: the one the card names)")
    p.add_argument("--template", default=None, help="card template (default: the package's hub/templates/model_card.md)")
    p.add_argument("--dense-top1", type=float, default=None, metavar="PCT",
                   help="record the dense baseline's top-1 (%%) in config.json first (a baseline measured after export)")
    p = add("onnx", "write an ONNX file of a checkpoint: BatchNorm folded, zeros exact, dynamic batch")
    p.add_argument("name", help="zoo name, repo id or export folder")
    p.add_argument("out", help="the .onnx file to write")
    p.add_argument("--batch-size", type=int, default=None, help="fixed batch size (default: dynamic)")

    return parser


# =============================================================================== output helpers
def _emit(args, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * float(value):.{digits}f}%"


def _size(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]

    def fmt(r):
        return "  ".join(str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip()

    return "\n".join([fmt(headers)] + [fmt(r) for r in rows])


# =============================================================================== list
def _cmd_list(args) -> int:
    from .hub.leaderboard import leaderboard
    from .hub.records import records_from_folders, records_from_zoo, unique_records
    from .hub.render import leaderboard_text, write_zoo_markdown, zoo_markdown

    records = records_from_zoo(args.pattern, args.hub, fetch=args.fetch)
    if args.folder:
        records = unique_records(records + records_from_folders(args.folder))
    if args.output or args.markdown:
        command = "fggp-hub list --leaderboard --markdown" + "".join(f" --folder {f}" for f in args.folder)
        text = zoo_markdown(records, command=command)
        if args.output:
            path = write_zoo_markdown(args.output, records, command=command)
            _emit(args, {"output": str(path), "models": len(records)}, f"wrote {path} ({len(records)} models)")
        else:
            _emit(args, {"markdown": text}, text.rstrip())
        return 0
    if args.leaderboard:
        rows = leaderboard(records)
        _emit(args, [r.to_dict() for r in rows], leaderboard_text(rows))
        return 0
    if args.json:
        _emit(args, [r.to_dict() for r in records], "")
        return 0
    if not records:
        print("the zoo is empty" if not args.pattern else f"no zoo name matches {args.pattern!r}")
        return 0
    rows = []
    for r in records:
        top1 = "-" if r.top1 is None else f"{r.top1:.2f}" + ("" if r.accuracy_source in ("card", "eval_results.json", "config.json") else " (index)")
        rows.append([r.name, r.backbone or "-", r.method or "-", _pct(r.sparsity if r.sparsity is not None else r.target_sparsity), top1, _size(r.compact_bytes), _size(r.dense_bytes),
                     "yes" if r.available else "no"])
    print(_table(["name", "backbone", "method", "sparsity", "top1 (%)", "compact", "dense", "available"], rows, right={3, 4, 5, 6}))
    missing = [r for r in records if not r.available]
    for r in missing:
        print(f"  {r.name}: {r.status}")
    return 0


# =============================================================================== info / pull / push
def _cmd_info(args) -> int:
    from .hub import load
    from .hub.records import card_results
    from .pruning import sparsity_stats

    model = load(args.name, revision=args.revision, hub=args.hub, compact=not args.dense, force_download=args.force_download)
    hub_info = dict(getattr(model, "hub_info", {}))
    record = model.sparsity_info
    folder = Path(hub_info["folder"])
    stats = sparsity_stats(model, include_first_conv=record.include_first_conv)
    found, where = card_results(folder)
    files = record.file_sizes()
    info = {
        "name": record.name or args.name,
        "source": args.name,
        "repo_id": hub_info.get("repo_id"),
        "revision": hub_info.get("revision"),
        "hub": hub_info.get("hub"),
        "folder": str(folder),
        "verified": hub_info.get("weights"),
        "architecture": model.pretrained_cfg["architecture"],
        "num_classes": getattr(model, "num_classes", None),
        "method": record.method,
        "dataset": record.dataset,
        "sparsity": stats["sparsity"],
        "target_sparsity": record.target_sparsity,
        "sparsity_all_params": stats["sparsity_all_params"],
        "nonzero_params": stats["nonzero_params"],
        "total_params": stats["total_params"],
        "top1": found.get("top1"),
        "top5": found.get("top5"),
        "accuracy_source": where,
        "results": record.results,
        "dense_top1": (record.dense_baseline or {}).get("top1"),
        "pruning": record.pruning,
        "files": files,
        "layers": stats["layers"],
    }
    where_text = f"{info['repo_id']}@{(info['revision'] or '')[:12]} on {info['hub']}" if info["repo_id"] else info["folder"]
    target = f" (target {_pct(info['target_sparsity'])})" if info["target_sparsity"] is not None else ""
    lines = [
        f"{info['name']}  ({where_text})",
        f"  architecture  {info['architecture']} ({info['num_classes']} classes)",
        f"  method        {info['method']}",
        f"  dataset       {info['dataset']}",
        f"  sparsity      {_pct(info['sparsity'], 4)} of prunable weights{target}, {_pct(info['sparsity_all_params'])} of all parameters",
        f"  parameters    {info['nonzero_params']:,} of {info['total_params']:,} nonzero",
        "  top-1         " + ("-" if info["top1"] is None else f"{info['top1']:.2f}% (from {where})")
        + ("" if info["dense_top1"] is None else f", dense baseline {info['dense_top1']:.2f}%"),
        "  files         " + ", ".join(f"{n} {_size(s)}" for n, s in files.items()),
        f"  verified      {info['verified']}: sha256 and sparsity match config.json and the card",
        "",
    ]
    rows = [[name, "x".join(str(s) for s in layer["shape"]), f"{layer['numel']:,}", f"{layer['zeros']:,}", _pct(layer["sparsity"])]
            for name, layer in stats["layers"].items()]
    lines.append(_table(["layer", "shape", "weights", "zeros", "sparsity"], rows, right={2, 3, 4}))
    _emit(args, info, "\n".join(lines))
    return 0


def _repo_and_revision(name: str, revision: str | None, hub: str | None) -> tuple[str, str | None, Any]:
    """A zoo name or org/name[@rev] -> (repo_id, revision, hub to use)."""
    from .hub.load import resolve_source

    source = resolve_source(name, revision, hub)
    if source.get("origin") == "bundled":
        raise CliError(f"{name} ships with fggp-hub in {source['path']}: nothing to pull (load it by name)")
    if source["kind"] == "folder":
        raise CliError(f"{name} is a local folder, not a repo: nothing to pull (use 'fggp-hub info {name}' to check it)")
    return source["repo_id"], source["revision"], source.get("hub")


def _cmd_pull(args) -> int:
    from .hub import pull

    repo_id, revision, hub = _repo_and_revision(args.name, args.revision, args.hub)
    folder = pull(repo_id, revision=revision, hub=hub, force_download=args.force_download)
    _emit(args, {"name": args.name, "repo_id": repo_id, "revision": folder.name, "folder": str(folder)}, str(folder))
    return 0


def _cmd_push(args) -> int:
    from .hub import push

    revision = push(args.folder, args.repo_id, hub=args.hub, revision=args.revision, commit_message=args.message, private=args.private,
                    overwrite=args.overwrite, delete_others=args.delete_others)
    _emit(args, {"repo_id": args.repo_id, "revision": revision, "branch": args.revision}, f"pushed {args.repo_id}@{revision}")
    return 0


# =============================================================================== export


def _read_state_dict(path: Path) -> dict:
    """A safetensors state_dict, without wrapper prefixes (DDP's ``module.``, torch.compile's ``_orig_mod.``)."""
    if path.suffix != ".safetensors":
        raise CliError(f"{path} is not a .safetensors file: only safetensors weights are read (never pickles)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except SafetensorError as err:
        raise CliError(f"{path} is not a readable safetensors file ({' '.join(str(err).split())})") from None
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _find_checkpoint(source: Path, step: int | None) -> tuple[Path | None, Path]:
    """(run folder or None, checkpoint folder) of a run folder or one of its checkpoint folders."""
    from .recipes.run_folder import CHECKPOINT_PREFIX, checkpoint_is_complete

    if (source / "recipe.resolved.yaml").is_file():
        root = source / "checkpoints"
        named = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.name.split("_")[-1].isdigit()]
        if not named:  # a run from before step-named checkpoints (step N then means checkpoint_N)
            named = [p for p in root.glob("checkpoint_*") if p.name.split("_")[-1].isdigit()]
        checkpoints = sorted((p for p in named if checkpoint_is_complete(p)), key=lambda p: int(p.name.split("_")[-1]))
        if step is not None:
            checkpoints = [p for p in checkpoints if int(p.name.split("_")[-1]) == step]
        if not checkpoints:
            what = f"checkpoint of step {step}" if step is not None else "complete checkpoint"
            raise CliError(f"no {what} under {root}: train with train.checkpoint_every > 0")
        return source, checkpoints[-1]
    if (source / DENSE_WEIGHTS_NAME).is_file():
        run = source.parent.parent if source.parent.name == "checkpoints" else None
        return (run if run is not None and (run / "recipe.resolved.yaml").is_file() else None), source
    raise CliError(f"{source} is neither a run folder (recipe.resolved.yaml) nor a checkpoint folder (model.safetensors)")


def _num_classes(arch: str, state: dict) -> int | None:
    import timm

    try:
        classifier = timm.models.get_pretrained_cfg(arch).classifier
    except (AttributeError, RuntimeError):
        return None
    names = [classifier] if isinstance(classifier, str) else list(classifier or [])
    for name in names:
        weight = state.get(f"{name}.weight")
        if weight is not None and weight.dim() >= 1:
            return int(weight.shape[0])
    return None


def _build(arch: str, state: dict, num_classes: int | None, model_args: dict):
    import timm

    if not timm.is_model(arch):
        raise CliError(f"unknown timm architecture {arch!r}: pass --model with a name timm.list_models() knows")
    num_classes = num_classes or _num_classes(arch, state)
    kwargs = dict(model_args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = timm.create_model(arch, pretrained=False, **kwargs)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise CliError(f"the weights do not fit {arch}: {str(err).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CliError(f"the weights do not fit {arch} (missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}): check --model")
    return model.eval()


def _read_json(path: str | Path, what: str) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CliError(f"{what} file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CliError(f"{what} file {path} is not valid JSON") from None
    if not isinstance(data, dict):
        raise CliError(f"{what} file {path} must hold a JSON object such as {{\"top1\": 93.1}}")
    return data


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _cmd_export(args) -> int:
    from .hub import export, push
    from .pruning import sparsity_stats

    source = Path(args.checkpoint).expanduser()
    if not source.exists():
        raise CliError(f"checkpoint {source} does not exist: pass a run folder, one of its checkpoints/step_N folders or a .safetensors file")
    kwargs: dict[str, Any] = {}
    if source.is_file():
        if not args.model:
            raise CliError(f"{source} is a plain state_dict: pass --model ARCH (the timm architecture it belongs to)")
        model = _build(args.model, _read_state_dict(source), args.num_classes, {})
        kwargs.update(pruning=args.method, recipe=args.recipe)
        results = _read_json(args.results, "results") if args.results else None
        name = args.name
    else:
        from .recipes import RecipeError, load_recipe

        run, checkpoint = _find_checkpoint(source, args.step)
        state = _read_state_dict(checkpoint / DENSE_WEIGHTS_NAME)
        if run is None:  # a lone checkpoint folder: like a plain file
            if not args.model:
                raise CliError(f"{checkpoint} is not inside a run folder (no recipe.resolved.yaml): pass --model ARCH")
            model = _build(args.model, state, args.num_classes, {})
            kwargs.update(pruning=args.method, recipe=args.recipe)
            results = _read_json(args.results, "results") if args.results else None
            name = args.name
        else:
            cfg = load_recipe(run / RESOLVED_RECIPE_NAME)
            model = _build(args.model or cfg.model, state, args.num_classes or cfg.num_classes, cfg.model_args)
            newest = _find_checkpoint(run, None)[1] == checkpoint
            results = None
            if args.results:
                results = _read_json(args.results, "results")
            elif (run / RUN_RESULTS_NAME).is_file():
                run_results = _read_json(run / RUN_RESULTS_NAME, "results")
                measured = sparsity_stats(model, include_first_conv=cfg.pruning.include_first_conv)["sparsity"]
                if newest and abs(float(run_results.get("sparsity", -1)) - measured) <= 1e-6:
                    results = run_results
                else:
                    _warn(f"{run / RUN_RESULTS_NAME} belongs to the end of the run, not to {checkpoint.name}: exporting without results")
            from .recipes.export_run import run_export_kwargs

            try:  # the run folder records what to write (run_info.json); older runs are rebuilt from the recipe
                settings = run_export_kwargs(run, results=results, total_steps=args.total_steps)
            except RecipeError as err:
                raise CliError(str(err)) from None
            name = args.name or settings.pop("name")
            settings.pop("name", None)
            if args.method is not None:
                settings["pruning"] = {**settings["pruning"], "method": args.method}
            if args.recipe:
                settings["recipe"] = args.recipe
            command = settings.pop("command")
            if args.train_command is None:
                args.train_command = command
            kwargs.update(settings)
    if args.dataset is not None:
        kwargs["dataset"] = args.dataset
    if args.dense_top1 is not None:
        kwargs["dense_top1"] = args.dense_top1
    folder = export(model, args.out_dir, results=results, command=args.train_command, name=name, variant=args.variant,
                    repo_id=args.repo_id or args.push_to, compact=not args.no_compact, overwrite=not args.no_overwrite, **kwargs)
    from .hub.integrity import read_export

    record = read_export(folder)[1]
    out = {"folder": str(folder), "name": record.name, "architecture": model.pretrained_cfg.get("architecture"),
           "sparsity": record.sparsity, "results": record.results}
    text = f"exported {record.name} to {folder} (sparsity {_pct(record.sparsity, 4)})"
    if args.push_to:
        revision = push(folder, args.push_to, hub=args.hub, overwrite=args.overwrite_repo)
        out.update(repo_id=args.push_to, revision=revision)
        text += f"\npushed {args.push_to}@{revision}"
    _emit(args, out, text)
    return 0


# =============================================================================== eval
def _tolerances(values: list[str]) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for raw in values:
        key, eq, value = raw.partition("=")
        if not eq:
            key, value = "", raw
        try:
            number = float(value)
        except ValueError:
            raise CliError(f"--tolerance {raw!r}: expected a number or METRIC=NUMBER, e.g. 0.5 or top1=0.5") from None
        if not math.isfinite(number) or number < 0:
            raise CliError(f"--tolerance {raw!r}: must be a finite number >= 0")
        if key:
            out[key.strip()] = number
        else:
            out["top1"] = out["top5"] = number
    return out or None


def _fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1 else f"{value:,.4f}".rstrip("0").rstrip(".")
    return str(value)


#: Numbers in evaluate_model's results that describe the run, not the model (shown with --json only).
_SETTINGS = {"batch_size", "num_processes", "torch_threads", "dataset_size", "prunable_params"}


def _cmd_eval(args) -> int:
    from .eval import card_metrics, compare_with_card, evaluate_model, save_results, write_results_to_card

    tolerances = _tolerances(args.tolerance)
    if args.num_images is not None and args.num_images < 1:
        raise CliError("--num-images must be >= 1")
    if args.batch_size < 1:
        raise CliError("--batch-size must be >= 1")
    card = card_metrics(args.name, hub=args.hub, revision=args.revision, num_images=args.num_images)
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under `accelerate launch`: shard the test set
        from accelerate import Accelerator

        accelerator = Accelerator()
    measured = evaluate_model(args.name, hub=args.hub, revision=args.revision, dataset=args.dataset, split=args.split,
                              num_images=args.num_images, batch_size=args.batch_size,
                              device=None if accelerator else args.device, accelerator=accelerator,
                              measure_latency=not args.no_latency, progress=not args.no_progress)
    if accelerator is not None and not accelerator.is_main_process:
        return 0  # one process reports and writes
    rows = compare_with_card(measured, card, tolerances)
    failed = [r for r in rows if not r.get("ok")]
    if args.output:
        save_results(measured, args.output)
    if args.update_card:
        write_results_to_card(args.name, measured, hub=args.hub)
    data = {"name": args.name, "measured": measured, "card": card, "comparison": rows, "ok": not failed}
    compared = {r["metric"] for r in rows}
    lines = [_table(
        ["metric", "card", "measured", "diff", "tolerance", ""],
        [[r["metric"], _fmt_value(r.get("card")), _fmt_value(r.get("measured")), _fmt_value(r.get("diff")),
          _fmt_value(r.get("tolerance")), "ok" if r.get("ok") else "DIFFERS"] for r in rows],
        right={1, 2, 3, 4},
    )]
    extra = {k: v for k, v in measured.items()
             if k not in compared and k not in _SETTINGS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if extra:
        lines += ["", "measured only:"] + [f"  {k:<26}{_fmt_value(v)}" for k, v in extra.items()]
    if args.output:
        lines.append(f"saved {args.output}")
    if args.update_card:
        lines.append(f"updated the card of {args.name}")
    lines.append(f"{len(failed)} of {len(rows)} metrics differ from the card beyond tolerance" if failed
                 else f"all {len(rows)} compared metrics agree with the card")
    _emit(args, data, "\n".join(lines))
    if args.check and failed:
        print(f"error: {', '.join(r['metric'] for r in failed)} differ from the card beyond tolerance", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


# =============================================================================== card
def _cmd_card(args) -> int:
    from .hub.card import rewrite_folder_card
    from .hub.errors import FolderNotFoundError

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise FolderNotFoundError(f"{folder} is not a folder: pass an export folder (fggp-hub export / fggp_hub.export)")
    if args.template and not Path(args.template).is_file():
        raise CliError(f"template {args.template} not found")
    if args.dense_top1 is not None and not 0 <= args.dense_top1 <= 100:
        raise CliError(f"--dense-top1 {args.dense_top1}: must be a top-1 percentage in [0, 100]")
    path = rewrite_folder_card(folder, repo_id=args.repo_id, template=args.template, dense_top1=args.dense_top1)
    _emit(args, {"card": str(path)}, f"wrote {path}")
    return 0


# =============================================================================== main
def _cmd_onnx(args) -> int:
    from .hub import load
    from .onnx import to_onnx

    path = to_onnx(load(args.name, hub=args.hub), args.out, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"name": args.name, "onnx": str(path), "batch_size": args.batch_size}))
    else:
        print(f"wrote {path}")
    return 0


_COMMANDS = {"list": _cmd_list, "info": _cmd_info, "pull": _cmd_pull, "push": _cmd_push,
             "export": _cmd_export, "eval": _cmd_eval, "card": _cmd_card, "onnx": _cmd_onnx}


def _is_user_error(err: BaseException) -> bool:
    """The CLI's error table: True for errors the user is to fix (one line, exit 1), False for bugs (a traceback).

    Only errors raised on purpose count: fggp-hub's own (:class:`~fggp_hub.errors.FggpHubError`:
    hub, data, recipes, eval, onnx and the CLI's; sparse inference has a root of its own), and
    an ``OSError`` that names the file it failed on (a path the user gave: missing, unreadable,
    a folder). A bare ``KeyError``, ``ValueError`` or ``TypeError`` is a bug and keeps its traceback.
    """
    from .inference.errors import SparseInferenceError

    if isinstance(err, (FggpHubError, SparseInferenceError)):
        return True
    return isinstance(err, OSError) and getattr(err, "filename", None) is not None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import logging

    hub_logger = logging.getLogger("fggp_hub")
    if not hub_logger.handlers:  # the library's notices (replacing an export or a published model) as "warning: ..." lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s".replace("%(levelname)s", "warning")))
        handler.setLevel(logging.WARNING)
        hub_logger.addHandler(handler)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - filtered just below
        if not _is_user_error(err):
            raise
        message = " ".join(str(err).split()) or err.__class__.__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
