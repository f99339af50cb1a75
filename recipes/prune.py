#!/usr/bin/env python
"""Train a timm backbone while FGGP (or a baseline) prunes it, then export and publish it.

    accelerate launch recipes/prune.py --recipe recipes/vgg19_cifar10_s95.yaml
    python recipes/prune.py                                   # the quick CPU recipe
    python recipes/prune.py --recipe recipes/quick_cpu.yaml --train.epochs 2 --pruning.method gmp
    python recipes/prune.py --recipe ... --resume auto        # continue the newest complete checkpoint
    python recipes/prune.py --recipe ... --overwrite          # start an existing output_dir over
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/prune.py ...

Every recipe key can be overridden as ``--section.key VALUE``. Read top to bottom:
configuration, data, model, optimizer, pruner, training loop, evaluation, export.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

import fggp_hub
from fggp_hub.data.cache import CacheCorruptedError
from fggp_hub.data.errors import DataSourceError
from fggp_hub.data import (BatchNormalize, dataset_label, load_cifar10, load_image_dataset, make_loader,
                           make_streaming_loaders)
from fggp_hub.pruning import CubicSchedule, Pruner, sparsity_stats
from fggp_hub._io import write_text_atomic
from fggp_hub.constants import CIFAR10_MEAN, CIFAR10_STD, RESOLVED_RECIPE_NAME, RUN_RESULTS_NAME
from fggp_hub.recipes import RecipeError, RunError, default_export_name, load_recipe, recipe_to_dict
from fggp_hub.recipes import run_folder
from fggp_hub.recipes.export_run import RUN_INFO, export_run, write_run_info

QUICK_RECIPE = Path(__file__).resolve().parent / "quick_cpu.yaml"


class RunState:
    """Progress that is not in the model, optimizer or pruner: resumable with them."""

    def __init__(self) -> None:
        self.epoch = 0  # completed epochs
        self.best_top1_after_pruning = None
        self.history: list[dict] = []
        self.wall_s = 0.0  # training wall time of the segments before this one (resumed runs)
        self.resumed = False

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "best": self.best_top1_after_pruning, "history": json.dumps(self.history),
                "wall_s": self.wall_s}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.best_top1_after_pruning = state["best"]
        self.history = json.loads(state["history"])
        self.wall_s = float(state.get("wall_s", 0.0))
        self.resumed = True


def recipe_help() -> str:
    """Every recipe key with its default, for ``--help`` (the dataclasses are the schema)."""
    import dataclasses

    from fggp_hub.recipes import Recipe

    lines = ["recipe keys (override any as --section.key VALUE; defaults shown):"]

    def walk(obj, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                lines.append(f"  --{prefix}{f.name} {value!r}")

    walk(Recipe(), "")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[Path, list[str], bool]:
    """``--recipe PATH``, ``--overwrite``, shortcuts (--resume, --init-from, --push-to, --output-dir), dotted overrides."""
    recipe = QUICK_RECIPE
    overrides: list[str] = []
    overwrite = False
    shortcuts = {"--resume": "--resume", "--init-from": "--init_from", "--push-to": "--export.push_to", "--output-dir": "--output_dir"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg.partition("=")
        if key in ("-h", "--help"):
            print(__doc__)
            print(recipe_help())
            sys.exit(0)
        if key == "--overwrite":
            overwrite = True
        elif key in ("--recipe", "-c", "--config") or key in shortcuts:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            if not value or value.startswith("--"):
                hint = " (e.g. --resume auto)" if key == "--resume" else ""
                raise RecipeError(f"{key} needs a value{hint}")
            if key in shortcuts:
                overrides += [shortcuts[key], value]
            else:
                recipe = Path(value)
        else:
            overrides.append(arg)
        i += 1
    return recipe, overrides, overwrite


def evaluate(model, loader, accelerator, normalize) -> dict:
    """Top-1 / loss on exactly the test set: gather_for_metrics drops the distributed padding."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    with torch.no_grad():
        for images, labels in loader:
            logits = model(normalize(images))
            logits, labels = accelerator.gather_for_metrics((logits.float(), labels))
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            total += labels.numel()
    model.train()
    return {"top1": 100.0 * correct / total, "loss": loss_sum / total, "num_images": total}


class _StopRequest:
    """Ctrl-C sets a flag; the loop stops at the next optimizer-step boundary and checkpoints."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopRequest":
        # SIGTERM (a scheduler, a campaign's budget, a session ending) stops the same way as Ctrl-C.
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def save_checkpoint(accelerator, out_dir: Path, step: int, keep: int) -> Path:
    """``save_state`` into a temporary folder, renamed once every process has written: crash-safe."""
    partial, final = run_folder.partial_path(out_dir, step), run_folder.final_path(out_dir, step)
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # saved at this step already (an epoch end that is also a step interval)
            shutil.rmtree(partial, ignore_errors=True)
        else:
            os.replace(partial, final)
        run_folder.prune_old_checkpoints(out_dir, keep)
    accelerator.wait_for_everyone()
    return final


def _run_command(recipe_path: Path, argv: list[str]) -> str:
    """What was actually run, with paths relative to the checkout where they lie inside it."""
    root = Path(__file__).resolve().parents[1]

    def rel(arg: str) -> str:
        path = Path(arg)
        if path.is_absolute():
            try:
                return str(path.resolve().relative_to(root))
            except ValueError:
                return arg
        return arg

    launcher = "accelerate launch" if "ACCELERATE_MIXED_PRECISION" in os.environ or int(
        os.environ.get("WORLD_SIZE", "1")) > 1 else "python"
    return f"{launcher} recipes/prune.py " + shlex.join([rel(a) for a in argv])


def main(argv: list[str] | None = None) -> int:
    """Run a recipe; a user error (a bad recipe: exit 2; data, model or launcher that do not fit: exit 1) is one line."""
    try:
        return _run(argv)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        recipe_path, overrides, overwrite = parse_args(argv)
        cfg = load_recipe(recipe_path, overrides)
        out_dir = Path(cfg.output_dir)
        if cfg.resume == "auto" and not (out_dir.is_dir() and any(out_dir.iterdir())):
            print(f"--resume auto: no run in {out_dir} yet, starting one")  # so one command starts and continues
            cfg.resume = None
        elif cfg.resume == "auto" and run_folder.stopped_before_first_checkpoint(out_dir):
            print(f"--resume auto: the run in {out_dir} stopped before its first checkpoint, starting it over")
            cfg.resume, overwrite = None, True
        if cfg.resume:
            cfg = run_folder.check_resume_compatible(out_dir, cfg)
            checkpoint = run_folder.find_resume_checkpoint(out_dir, cfg.resume)
        else:
            run_folder.refuse_existing_run(out_dir, cfg.resume, overwrite)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # ------------------------------------------------------------ accelerator
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        log_with=cfg.tracker,
        project_config=ProjectConfiguration(
            project_dir=str(out_dir), logging_dir=str(out_dir / "logs")  # checkpoints: save_checkpoint
        ),
    )
    expected = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != expected:
        raise RunError(
            f"the launcher asked for {expected} processes but accelerate runs {accelerator.num_processes}: "
            "on CPU use ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N"
        )
    set_seed(cfg.seed)
    main_process = accelerator.is_main_process
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # the run's record: never rewritten by a resume
            write_text_atomic(out_dir / RESOLVED_RECIPE_NAME, _yaml(recipe_to_dict(cfg)))

    # ------------------------------------------------------------------ data
    processes, accumulation = accelerator.num_processes, cfg.train.gradient_accumulation_steps
    per_process_batch = cfg.train.batch_size // (processes * accumulation)
    if per_process_batch * processes * accumulation != cfg.train.batch_size:
        raise RunError(f"train.batch_size={cfg.train.batch_size} does not split evenly over "
                         f"{processes} processes x {accumulation} accumulation steps")
    if cfg.data.streaming:  # ImageNet-size data: decoded on the fly by workers, nothing held in memory
        if not cfg.data.image_size:
            raise RunError("data.streaming needs data.image_size (e.g. 224)")
        model = _create_model(cfg, cfg.num_classes or 1000)
        mean, std = tuple(model.pretrained_cfg["mean"]), tuple(model.pretrained_cfg["std"])
        with accelerator.main_process_first():
            loader, test_loader, train = make_streaming_loaders(
                cfg.data.dataset, train_split=cfg.data.train_split, test_split=cfg.data.test_split,
                batch_size=per_process_batch, image_size=cfg.data.image_size, device=accelerator.device,
                seed=cfg.seed, rank=accelerator.process_index, world_size=processes, num_workers=cfg.data.num_workers,
                mean=mean, std=std, channels_last=cfg.train.channels_last, train_subset=cfg.data.train_subset,
                test_subset=cfg.data.test_subset, augment=cfg.data.augment, eval_batch_size=cfg.data.eval_batch_size)
        num_classes = cfg.num_classes or train.num_classes
        if num_classes != model.num_classes:
            model.reset_classifier(num_classes)
    else:  # CIFAR-size data: decoded once into a uint8 cache, augmented on the device
        data_kwargs = dict(image_size=cfg.data.image_size, cache_dir=cfg.data.cache_dir)
        with accelerator.main_process_first():  # one process decodes and fills the cache
            try:
                if cfg.data.dataset == "cifar10":
                    train = load_cifar10(cfg.data.train_split, **data_kwargs)
                    test = load_cifar10(cfg.data.test_split, **data_kwargs)
                else:
                    train = load_image_dataset(cfg.data.dataset, cfg.data.train_split, **data_kwargs)
                    test = load_image_dataset(cfg.data.dataset, cfg.data.test_split, **data_kwargs)
            except (DataSourceError, CacheCorruptedError, ValueError) as err:
                raise RunError(f"data.dataset {cfg.data.dataset!r}: {_first_line(err)}") from None
        if cfg.data.train_subset:
            train = train.subset(slice(0, cfg.data.train_subset))
        if cfg.data.test_subset:
            test = test.subset(slice(0, cfg.data.test_subset))
        num_classes = cfg.num_classes or train.num_classes
        model = _create_model(cfg, num_classes)
        _fit_input_size(model, cfg.model, tuple(train.images.shape[-2:]), cfg.train.progressive_resize)
        mean = tuple(model.pretrained_cfg.get("mean", CIFAR10_MEAN))
        std = tuple(model.pretrained_cfg.get("std", CIFAR10_STD))
        loader = make_loader(train, per_process_batch, train=cfg.data.augment, device=accelerator.device,
                             seed=cfg.seed, drop_last=cfg.data.drop_last, rank=accelerator.process_index,
                             world_size=processes,
                             channels_last=cfg.train.channels_last, mean=mean, std=std)
        test_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(test.images, test.labels),
                                                  batch_size=cfg.data.eval_batch_size)

    # ----------------------------------------------------------------- model
    steps_per_epoch = len(loader) // accumulation
    total_steps = steps_per_epoch * cfg.train.epochs
    if steps_per_epoch < 1:
        raise RunError(f"{len(train)} training images make no full batch of {cfg.train.batch_size}")
    if len(loader) % accumulation:
        raise RunError(f"{len(loader)} batches per epoch do not split into optimizer steps of "
                         f"{accumulation} accumulated batches: change train.batch_size or gradient_accumulation_steps")
    normalize = BatchNormalize(mean, std, channels_last=cfg.train.channels_last).to(accelerator.device)
    if cfg.init_from:  # sparse fine-tuning: start from a published checkpoint, its zeros are the mask
        try:
            source = fggp_hub.load(cfg.init_from, hub=cfg.export.hub)
        except fggp_hub.FggpHubError as e:
            raise RunError(f"init_from: {e}") from None
        target = model.state_dict()  # a head of another shape (new classes) starts fresh
        state = {k: v for k, v in source.state_dict().items() if k in target and target[k].shape == v.shape}
        missing = model.load_state_dict(state, strict=False)
        accelerator.print(f"init-from {cfg.init_from}: loaded {len(state)} tensors, fresh: {missing.missing_keys}")
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                nesterov=cfg.train.nesterov, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, run_folder.lr_lambda(cfg, steps_per_epoch, total_steps))
    model, optimizer, test_loader = accelerator.prepare(model, optimizer, test_loader)
    # Compile only the forward used for training: checkpoints, the pruner and export keep the plain module.
    train_forward = torch.compile(model) if cfg.train.compile else model

    # ---------------------------------------------------------------- pruner
    p = cfg.pruning
    if cfg.init_from or p.method == "none":
        schedule = None
        pruner = Pruner(model, optimizer, include_first_conv=p.include_first_conv)  # masks fixed
    else:
        schedule = CubicSchedule(total_steps=total_steps, final_density=1 - p.final_sparsity,
                                 initial_density=1 - p.initial_sparsity, interval=p.interval, end_fraction=p.end_fraction)
        try:
            pruner = Pruner(model, optimizer, schedule=schedule, method=p.method, rate=p.rate,
                            anneal_initial=p.anneal_initial, anneal_final=p.anneal_final,
                            include_first_conv=p.include_first_conv, seed=cfg.seed, check_sync=p.check_sync)
        except ValueError as e:  # e.g. r too small for the schedule: one line naming the fix
            raise RunError(f"pruning: {e}") from None
    run = RunState()
    accelerator.register_for_checkpointing(scheduler, pruner, run)
    if main_process and not (out_dir / RUN_INFO).is_file():  # what only the runner knows, for export_run
        write_run_info(out_dir, pruning=pruner.config(), dataset=dataset_label(cfg.data.dataset, str(train.source)),
                       command=_run_command(recipe_path, argv), total_steps=total_steps)

    if cfg.resume:
        if not list(checkpoint.glob(f"random_states_{accelerator.process_index}.pkl")):
            warnings.warn(f"{checkpoint} has no RNG state for process {accelerator.process_index}: "
                          "the resumed run will not match an uninterrupted one exactly", stacklevel=1)
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"resumed from {checkpoint} at optimizer step {pruner.step}")
    if cfg.tracker:
        accelerator.init_trackers("fggp", config=_flat(recipe_to_dict(cfg)))

    # -------------------------------------------------------------- training
    # Where to start: optimizer steps done (from the pruner) give the epoch and the batch.
    start_epoch = pruner.step // steps_per_epoch
    skip = (pruner.step % steps_per_epoch) * accumulation
    max_steps = min(cfg.train.max_steps or total_steps, total_steps)
    t_fin = schedule.t_fin if schedule else 0
    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(
        f"{cfg.model} ({n_params / 1e6:.2f}M params) on {len(train)} images, {accelerator.num_processes} process(es): "
        f"T = {total_steps} steps ({steps_per_epoch}/epoch x {cfg.train.epochs}), "
        + (f"{p.method} to {p.final_sparsity:.2%} by step {t_fin} every {p.interval}, " if schedule else "dense masks, ")
        + f"lr {cfg.train.lr_schedule} from {cfg.train.lr}; run folder {out_dir}"
        + (f"; resuming at step {pruner.step}" if cfg.resume else ""))
    bar = tqdm(total=max_steps, initial=pruner.step, disable=not main_process, desc="train", unit="step")
    started, wall_before = time.perf_counter(), run.wall_s
    last_saved = pruner.step if cfg.resume else -1

    def checkpoint_now() -> None:
        nonlocal last_saved
        if pruner.step != last_saved:
            run.wall_s = wall_before + time.perf_counter() - started
            save_checkpoint(accelerator, out_dir, pruner.step, cfg.train.keep_checkpoints)
            last_saved = pruner.step
    with _StopRequest() as stop:
        for epoch in range(start_epoch, cfg.train.epochs):
            if pruner.step >= max_steps:
                break
            model.train()
            loader.set_epoch(epoch)
            batches = loader.skip_first_batches(skip) if epoch == start_epoch and skip else loader
            for images, labels in batches:
                size = run_folder.resize_for_step(cfg, pruner.step, total_steps)
                if size and size != images.shape[-1]:  # progressive resizing: smaller images early
                    images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)
                    if cfg.train.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                with accelerator.accumulate(model):
                    loss = F.cross_entropy(train_forward(images), labels, label_smoothing=cfg.train.label_smoothing)
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()  # once per optimizer step: LR milestones are in optimizer steps
                bar.update(1)
                every = cfg.train.checkpoint_every_steps
                if every and pruner.step % every == 0 and pruner.step < max_steps:
                    checkpoint_now()
                if pruner.step % cfg.train.log_every == 0 or pruner.step == t_fin:
                    accelerator.log({"train/loss": float(loss.detach()), "train/lr": scheduler.get_last_lr()[0],
                                     "sparsity/target": pruner.target_sparsity, "sparsity/actual": pruner.sparsity},
                                    step=pruner.step)
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}", sparsity=f"{pruner.sparsity:.4f}")
                if _stop_everywhere(accelerator, stop.requested, pruner.step, cfg.train.log_every) or pruner.step >= max_steps:
                    break
            if stop.requested:
                checkpoint_now()
                bar.close()
                accelerator.print(f"\ninterrupted at step {pruner.step}: continue with --resume auto "
                                  f"--output-dir {out_dir}")
                accelerator.end_training()
                return 130
            run.epoch = pruner.step // steps_per_epoch
            finished = pruner.step >= max_steps
            if run.epoch % cfg.train.eval_every == 0 or finished:
                metrics = evaluate(model, test_loader, accelerator, normalize)
                run.history.append({"epoch": run.epoch, "step": pruner.step, "sparsity": pruner.sparsity, **metrics})
                if pruner.step >= t_fin and (run.best_top1_after_pruning is None
                                             or metrics["top1"] > run.best_top1_after_pruning):
                    run.best_top1_after_pruning = metrics["top1"]
                accelerator.log({"test/top1": metrics["top1"], "test/loss": metrics["loss"]}, step=pruner.step)
                accelerator.print(f"epoch {run.epoch}: test top1 {metrics['top1']:.2f}% "
                                  f"({metrics['num_images']} images), sparsity {pruner.sparsity:.4f}")
            if cfg.train.checkpoint_every and (run.epoch % cfg.train.checkpoint_every == 0 or finished):
                checkpoint_now()
    bar.close()
    wall = wall_before + time.perf_counter() - started  # all segments of a resumed run
    accelerator.wait_for_everyone()

    # ------------------------------------------------------------ evaluation
    final = run.history[-1] if run.history else evaluate(model, test_loader, accelerator, normalize)
    stats = sparsity_stats(accelerator.unwrap_model(model), include_first_conv=p.include_first_conv)
    results = {
        "top1": final["top1"],
        "loss": final["loss"],
        "num_images": final["num_images"],
        "best_top1_after_pruning": run.best_top1_after_pruning,
        "sparsity": stats["sparsity"],
        "sparsity_all_params": stats["sparsity_all_params"],
        "optimizer_steps": pruner.step,
        "total_steps": total_steps,  # T of the schedule (fggp-hub export rebuilds the schedule from it)
        "epochs": run.epoch,
        "train_wall_s": wall,
        "resumed": run.resumed,
        "processes": accelerator.num_processes,
        "mask_sha256": pruner.mask_fingerprint(),
        "hardware": _hardware(accelerator),  # the card names the machine the wall time was measured on
        "dataset": cfg.data.dataset,
        "split": cfg.data.test_split,
    }
    accelerator.end_training()
    if not main_process:
        return 0
    write_text_atomic(out_dir / RUN_RESULTS_NAME, json.dumps(results, indent=2))
    print(f"\ndone in {wall / 60:.1f} min: test top1 {results['top1']:.2f}% "
          f"(best after pruning {results['best_top1_after_pruning']}) at sparsity {results['sparsity']:.4f}")

    # ---------------------------------------------------------------- export
    if not cfg.export.enabled:
        return 0
    if pruner.step < total_steps:
        print(f"not exported: the run stopped at step {pruner.step} of {total_steps} (train.max_steps), so it is "
              "not the model its recipe describes; continue it with --resume auto to finish and export")
        return 0
    if schedule is not None and abs(stats["sparsity"] - p.final_sparsity) > 1e-3:
        print(f"error: the model is {stats['sparsity']:.4%} sparse, not the {p.final_sparsity:.2%} its recipe "
              "names: not exported", file=sys.stderr)
        return 1
    name = cfg.export.name or default_export_name(cfg)
    folder = export_run(out_dir, out_dir / "export" / name, model=accelerator.unwrap_model(model), results=results,
                        name=name, dense_top1=cfg.export.dense_baseline_top1)
    repo_id = cfg.export.push_to or f"local/{name}"
    try:
        revision = fggp_hub.push(folder, repo_id, hub=cfg.export.hub, overwrite=cfg.export.overwrite)
    except fggp_hub.FggpHubError as err:  # e.g. another model already published under that name
        print(f"exported {folder}\nerror: not published: {err} (or pass --export.overwrite true)", file=sys.stderr)
        return 1
    print(f"exported {folder}\npublished {repo_id}@{revision[:12]} to the {'given' if cfg.export.hub else 'local'} hub\n")
    print("load it with:")
    hub_arg = f", hub={cfg.export.hub!r}" if cfg.export.hub else ""
    print(f"    python -c \"import fggp_hub; m = fggp_hub.load('{repo_id}'{hub_arg}); print(m)\"")
    print(f"    fggp-hub info {repo_id}" + (f" --hub {cfg.export.hub}" if cfg.export.hub else ""))
    return 0


def _stop_everywhere(accelerator, requested: bool, step: int, every: int) -> bool:
    """All processes stop at the same step when any one was interrupted.

    With several processes this needs a collective, so it is asked only every
    ``every`` steps (the same steps on every rank), not on every training step.
    """
    if accelerator.num_processes == 1:
        return requested
    if step % every:
        return False
    flag = torch.tensor([1.0 if requested else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, "sum").item() > 0)


def _hardware(accelerator) -> str:
    """The machine a run trained on, in words: GPU model, or CPU model and cores; times the process count."""
    n = accelerator.num_processes
    if accelerator.device.type == "cuda":
        return f"{n} x {torch.cuda.get_device_name(accelerator.device)}"
    model = "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, {torch.get_num_threads()} threads" + (f", {n} processes" if n > 1 else "")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _create_model(cfg, num_classes: int):
    """timm.create_model, with an unknown name or bad arguments as one line instead of a traceback."""
    if num_classes < 1:
        raise RunError(f"num_classes must be >= 1, got {num_classes}")
    try:
        return timm.create_model(cfg.model, num_classes=num_classes, **cfg.model_args)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            close = timm.list_models(f"*{cfg.model.split('_')[-1]}*")[:4]
            hint = f" (close: {', '.join(close)})" if close else ""
            raise RunError(f"model: {cfg.model!r} is not a timm architecture{hint}") from None
        raise
    except TypeError as err:
        raise RunError(f"model_args for {cfg.model}: {_first_line(err)}") from None


def _fit_input_size(model, name: str, size: tuple[int, int], resize: list) -> None:
    """Refuse image sizes the model cannot take (one line), and record the trained size in its pretrained_cfg.

    The exported config.json (and so the card and timm) then states the resolution the model
    was trained and evaluated at, not the architecture's default.
    """
    channels = model.pretrained_cfg.get("input_size", (3,))[0]
    sizes = [size] + [(int(s), int(s)) for _, s in resize]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for h, w in sizes:
                model(torch.zeros(1, channels, h, w))
    except RuntimeError as err:
        raise RunError(f"{name} cannot take {h}x{w} images ({_first_line(err)}): set data.image_size "
                         "to a size it accepts (e.g. 32 for the CIFAR backbones)") from None
    finally:
        model.train(was_training)
    if tuple(model.pretrained_cfg.get("input_size", ())[1:]) != size:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (channels, *size)}
        model.pretrained_cfg.pop("test_input_size", None)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


if __name__ == "__main__":
    sys.exit(main())
