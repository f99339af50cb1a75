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
import os
import sys
from pathlib import Path
from typing import Any

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


# =============================================================================== list
def _cmd_list(args) -> int:
    from .hub.leaderboard import leaderboard
    from .hub.records import records_from_folders, records_from_zoo, unique_records
    from .hub.render import leaderboard_text, write_zoo_markdown, zoo_markdown, zoo_table_text

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
    print(zoo_table_text(records, args.pattern))
    return 0


# =============================================================================== info / pull / push
def _cmd_info(args) -> int:
    from .hub import load
    from .hub.records import model_info
    from .hub.render import model_info_text

    model = load(args.name, revision=args.revision, hub=args.hub, compact=not args.dense, force_download=args.force_download)
    info = model_info(model, args.name)
    _emit(args, info, model_info_text(info))
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
def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _cmd_export(args) -> int:
    from .hub import push
    from .recipes.export_checkpoint import export_checkpoint

    folder, model = export_checkpoint(
        args.checkpoint, args.out_dir, arch=args.model, num_classes=args.num_classes, step=args.step, name=args.name,
        method=args.method, dataset=args.dataset, dense_top1=args.dense_top1, results_file=args.results,
        recipe=args.recipe, total_steps=args.total_steps, command=args.train_command, warn=_warn,
        variant=args.variant, repo_id=args.repo_id or args.push_to, compact=not args.no_compact, overwrite=not args.no_overwrite)
    from .hub.integrity import read_export
    from .hub.render import percent

    record = read_export(folder)[1]
    out = {"folder": str(folder), "name": record.name, "architecture": model.pretrained_cfg.get("architecture"),
           "sparsity": record.sparsity, "results": record.results}
    text = f"exported {record.name} to {folder} (sparsity {percent(record.sparsity, 4)})"
    if args.push_to:
        revision = push(folder, args.push_to, hub=args.hub, overwrite=args.overwrite_repo)
        out.update(repo_id=args.push_to, revision=revision)
        text += f"\npushed {args.push_to}@{revision}"
    _emit(args, out, text)
    return 0


# =============================================================================== eval
def _cmd_eval(args) -> int:
    from .eval import compare_with_card, evaluate_model, save_results
    from .eval.card_compare import comparison_text, parse_tolerances
    from .hub.card import card_metrics, write_results_to_card

    tolerances = parse_tolerances(args.tolerance)
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
    lines = [comparison_text(rows, measured)]
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
    hub, data, recipes, eval, onnx, sparse inference and the CLI's), and
    an ``OSError`` that names the file it failed on (a path the user gave: missing, unreadable,
    a folder). A bare ``KeyError``, ``ValueError`` or ``TypeError`` is a bug and keeps its traceback.
    """
    if isinstance(err, FggpHubError):
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
