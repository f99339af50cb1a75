"""``fggp-hub``: the command line over the public API (thin: parsing, printing, exit codes).

    fggp-hub list                                   # the zoo
    fggp-hub push out/vgg19-cifar10-s95 me/vgg19-cifar10-s95
    fggp-hub pull me/vgg19-cifar10-s95 --hub https://huggingface.co
    fggp-hub info me/vgg19-cifar10-s95 --json
"""
from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fggp-hub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fggp-hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--hub", default=None, help="local hub folder, 'local', 'hf' or an endpoint URL (default: $FGGP_HUB or the local hub)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add("list", "list the zoo's models").add_argument("pattern", nargs="?", default=None)
    p = add("push", "publish an exported folder as one commit")
    p.add_argument("folder")
    p.add_argument("repo_id")
    p = add("pull", "download a model repo (into the huggingface_hub cache for remote hubs)")
    p.add_argument("name")
    p.add_argument("--revision", default=None)
    p = add("info", "load a model (verifying hashes and sparsity) and print its card's essentials")
    p.add_argument("name")
    p.add_argument("--revision", default=None)
    return parser


def _emit(args, data, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import hub as hub_api
    from .pruning import sparsity_stats

    try:
        if args.command == "list":
            entries = hub_api.list_models(args.pattern)
            rows = [e.to_dict() for e in entries]
            lines = [f"{'name':<36}{'repo':<40}{'sparsity':>9}"] + [
                f"{e.name:<36}{e.repo_id:<40}{'' if e.sparsity is None else f'{e.sparsity:.2%}':>9}" for e in entries
            ]
            _emit(args, rows, "\n".join(lines) if entries else "the zoo is empty")
        elif args.command == "push":
            revision = hub_api.push(args.folder, args.repo_id, hub=args.hub)
            _emit(args, {"repo_id": args.repo_id, "revision": revision}, f"pushed {args.repo_id}@{revision}")
        elif args.command == "pull":
            folder = hub_api.pull(args.name, revision=args.revision, hub=args.hub)
            _emit(args, {"repo_id": args.name, "folder": str(folder)}, str(folder))
        elif args.command == "info":
            model = hub_api.load(args.name, revision=args.revision, hub=args.hub)
            stats = sparsity_stats(model)
            info = {
                "name": args.name,
                "architecture": model.pretrained_cfg.get("architecture"),
                "sparsity": stats["sparsity"],
                "sparsity_all_params": stats["sparsity_all_params"],
                "nonzero_params": stats["nonzero_params"],
                "total_params": stats["total_params"],
                "layers": {k: v["sparsity"] for k, v in stats["layers"].items()},
            }
            text = "\n".join(
                [f"{info['name']}: {info['architecture']}, sparsity {info['sparsity']:.4%} of prunable weights, "
                 f"{info['nonzero_params']:,} of {info['total_params']:,} parameters nonzero"]
                + [f"  {k:<40}{v:>9.2%}" for k, v in info["layers"].items()]
            )
            _emit(args, info, text)
    except (hub_api.FggpHubError, FileNotFoundError, ValueError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
