"""``evaluate_model``: accuracy, loss, sparsity, MACs and latency of a model, in one flat dict.

    results = evaluate_model("vgg19-cifar10-s95")                  # zoo name, org/name[@rev] or folder
    results = evaluate_model(model, num_images=512, measure_latency=False)

Top-1 / top-5 accuracy and the mean cross-entropy are computed by ``evaluate`` metric
modules shipped in ``fggp_hub/eval/metrics/`` and loaded by path (``evaluate.load(dir)``),
so nothing is fetched from the Hub. With an ``accelerate.Accelerator`` the test set is
sharded over the processes and ``accelerator.gather_for_metrics`` drops the padding of
the last batch, so exactly ``num_images`` images count, as in ``recipes/prune.py``.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..constants import CIFAR10_MEAN, CIFAR10_STD
from ..data.sources import dataset_label
from .errors import EvalError
from ..pruning.flops import count_macs
from .latency import latency_keys
from .latency import measure_latency as _time_forward  # evaluate_model's flag has the same name

__all__ = ["evaluate_model", "load_metric", "METRICS_DIR", "dataset_label"]

#: The metric modules shipped with the package (``<name>/<name>.py``).
METRICS_DIR = Path(__file__).resolve().with_name("metrics")


def load_metric(name: str, config_name: str | None = None):
    """A metric module of ``METRICS_DIR`` through ``evaluate.load(path)``: offline, kept in memory."""
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        known = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise EvalError(f"no metric module {name!r} in {METRICS_DIR}: use one of {', '.join(known)}")
    return evaluate.load(str(path), config_name, keep_in_memory=True)


# --------------------------------------------------------------------------- pieces
def _pick_device(device: str | torch.device | None, accelerator: Any) -> torch.device:
    if accelerator is not None:
        if device is not None and torch.device(device) != accelerator.device:
            raise EvalError(f"device={device} differs from the accelerator's {accelerator.device}: pass one of them")
        return accelerator.device
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_model(model_or_name: Any, hub: Any, revision: str | None, device: torch.device) -> tuple[nn.Module, dict]:
    """The model in eval mode on ``device`` and what is known of where it came from."""
    from ..hub import load

    if isinstance(model_or_name, nn.Module):
        model = model_or_name
        if hub is not None or revision is not None:
            raise EvalError("hub= and revision= apply to a name, not to a model object: pass the name instead")
        name = None
    elif isinstance(model_or_name, (str, os.PathLike)):
        model = load(model_or_name, revision=revision, hub=hub, device=device)
        name = os.fspath(model_or_name)
    else:
        raise EvalError(f"evaluate_model needs a model, a zoo name, 'org/name[@rev]' or a folder, not {type(model_or_name).__name__}")
    from ..pruning import unwrap_model

    inner = unwrap_model(model)
    hub_info = dict(getattr(inner, "hub_info", None) or {})
    cfg = dict(getattr(inner, "pretrained_cfg", None) or {})
    info = {
        "model": name or hub_info.get("name") or cfg.get("architecture") or type(inner).__name__,
        "architecture": cfg.get("architecture"),
        "repo_id": hub_info.get("repo_id"),
        "revision": hub_info.get("revision"),
        "folder": hub_info.get("folder"),
        "include_first_conv": False,
    }
    record = getattr(inner, "sparsity_info", None)
    if record is not None:  # what the card's sparsity counted
        info["include_first_conv"] = record.include_first_conv
    elif info["folder"]:
        from ..hub.integrity import read_export

        info["include_first_conv"] = read_export(info["folder"])[1].include_first_conv
    model.to(device)
    return model, info


def _load_split(dataset: str, split: str, input_hw: tuple[int, int]):
    from ..data import load_cifar10, load_image_dataset

    if dataset == "cifar10":
        return load_cifar10(split, image_size=None if input_hw == (32, 32) else input_hw)
    return load_image_dataset(dataset, split, image_size=input_hw)


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device, accelerator: Any) -> Iterator:
    """uint8 batches on the device: every image once; sharded by accelerate when there is an accelerator."""
    if accelerator is None:
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
        return
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch_size, shuffle=False)
    yield from accelerator.prepare_data_loader(loader)


def _broadcast_from_main(value: Any, accelerator: Any) -> Any:
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


# --------------------------------------------------------------------------- main entry
def evaluate_model(
    model_or_name: nn.Module | str | os.PathLike,
    *,
    hub: Any = None,
    revision: str | None = None,
    dataset: str = "cifar10",
    split: str = "test",
    num_images: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    accelerator: Any = None,
    measure_latency: bool = True,
    latency_batch_sizes: Sequence[int] = (1, 64),
    progress: bool = True,
    data: Any = None,
    latency_repeats: int = 10,
) -> dict[str, Any]:
    """Evaluate a model on a test split; a flat, JSON-able dict of results.

    Args:
        model_or_name: an ``nn.Module`` (timm model), a zoo name, ``org/name[@rev]`` or an
            export folder: anything :func:`fggp_hub.load` takes (hashes and sparsity are verified).
            A model object is moved to ``device``; its training mode is restored afterwards.
        hub, revision: where a name is looked up (see :func:`fggp_hub.load`).
        dataset: ``"cifar10"`` (``$FGGP_CIFAR10_PATH`` or ``uoft-cs/cifar10``), or any source
            :func:`fggp_hub.data.load_image_dataset` takes (a Hub id, a folder, parquet files).
        split: the split to score.
        num_images: score only the first ``num_images`` images (a quick check); default all.
        batch_size: images per forward pass (per process with an accelerator).
        device: default the accelerator's, else CUDA when available, else CPU.
        accelerator: an ``accelerate.Accelerator``: shard the images over its processes
            and gather with ``gather_for_metrics``. Every process returns the same dict.
        measure_latency: time forward passes at ``latency_batch_sizes`` (main process only).
        progress: a tqdm bar on the main process.
        data: an already loaded :class:`fggp_hub.data.ImageTensors` split to score instead
            of loading ``dataset``/``split`` (its ``source`` still decides the label).
        latency_repeats: timed passes per batch size (their median is reported).

    Returns:
        ``model``, ``repo_id``/``revision``/``folder`` (when loaded by name), ``dataset``
        (label), ``split``, ``num_images``, ``top1``/``top5`` (%), ``loss`` (mean
        cross-entropy, no label smoothing), ``sparsity`` (prunable weights),
        ``sparsity_all_params``, ``nonzero_params``, ``total_params``, ``dense_macs`` and
        ``effective_macs`` (per image), ``latency_ms_batch{b}`` and
        ``throughput_img_s_batch{b}`` (None when not measured), ``device``,
        ``torch_threads``, ``torch_version``, ``timestamp`` and a few more.
    """
    from tqdm.auto import tqdm

    from ..version import __version__
    from ..data import BatchNormalize
    from ..pruning import sparsity_stats, unwrap_model

    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}")
    main = accelerator is None or accelerator.is_main_process
    device = _pick_device(device, accelerator)
    model, info = _resolve_model(model_or_name, hub, revision, device)
    inner = unwrap_model(model)
    cfg = dict(getattr(inner, "pretrained_cfg", None) or {})
    input_size = tuple(cfg.get("input_size") or (3, 32, 32))

    if data is None:
        if accelerator is not None:
            with accelerator.main_process_first():  # one process decodes and fills the cache
                data = _load_split(dataset, split, tuple(input_size[1:]))
        else:
            data = _load_split(dataset, split, tuple(input_size[1:]))
    label = dataset_label(dataset, str(getattr(data, "source", "") or ""))
    dataset_size = len(data)
    if num_images is not None:
        if not 1 <= num_images <= dataset_size:
            raise EvalError(f"num_images={num_images} is not in [1, {dataset_size}] (the size of split {split!r})")
        data = data.subset(slice(0, num_images))
    model_classes = getattr(inner, "num_classes", None)
    if isinstance(model_classes, int) and model_classes != data.num_classes:
        raise EvalError(f"the model predicts {model_classes} classes but {label} has {data.num_classes}: evaluate it on its own dataset")

    normalize = BatchNormalize(tuple(cfg.get("mean", CIFAR10_MEAN)), tuple(cfg.get("std", CIFAR10_STD))).to(device)
    num_classes = data.num_classes
    ks = (1, 5) if num_classes >= 5 else (1,)
    top_k = load_metric("top_k_accuracy", "indices")
    cross_entropy = load_metric("mean_cross_entropy")

    was_training = model.training
    model.eval()
    seen = 0
    bar = tqdm(total=len(data), desc="eval", unit="img", disable=not (progress and main), leave=False)
    try:
        with torch.no_grad():
            for images, labels in _batches(data.images, data.labels, batch_size, device, accelerator):
                logits = model(normalize(images)).float()
                ranked = logits.topk(max(ks), dim=1).indices
                if accelerator is not None:
                    logits, ranked, labels = accelerator.gather_for_metrics((logits, ranked, labels))
                refs = labels.cpu().numpy()
                top_k.add_batch(predictions=ranked.cpu().numpy(), references=refs)
                cross_entropy.add_batch(predictions=logits.cpu().numpy(), references=refs)
                seen += int(labels.shape[0])
                bar.update(int(labels.shape[0]))
    finally:
        bar.close()
        model.train(was_training)
    if seen != len(data):
        raise EvalError(f"scored {seen} images instead of {len(data)}: the distributed sharding lost or repeated images; please report this")
    accuracy = top_k.compute(k=ks, percent=True)
    loss = cross_entropy.compute()["loss"]

    stats = sparsity_stats(inner, include_first_conv=info["include_first_conv"])
    dense_macs, effective_macs = count_macs(inner, (1, *input_size))
    timings: dict[str, float | None] = dict.fromkeys(latency_keys(latency_batch_sizes))
    if measure_latency:
        if accelerator is not None:
            accelerator.wait_for_everyone()
        measured = _time_forward(inner, input_size, latency_batch_sizes, repeats=latency_repeats) if main else None
        timings.update(_broadcast_from_main(measured, accelerator))

    return {
        **{k: v for k, v in info.items() if k != "include_first_conv"},
        "dataset": label,
        "split": split,
        "num_images": seen,
        "dataset_size": dataset_size,
        "top1": accuracy["top1"],
        "top5": accuracy.get("top5"),
        "loss": loss,
        "sparsity": stats["sparsity"],
        "sparsity_all_params": stats["sparsity_all_params"],
        "include_first_conv": info["include_first_conv"],
        "prunable_params": stats["prunable_params"],
        "nonzero_params": stats["nonzero_params"],
        "total_params": stats["total_params"],
        "dense_macs": dense_macs,
        "effective_macs": effective_macs,
        "input_size": list(input_size),
        **timings,
        "batch_size": batch_size,
        "num_processes": 1 if accelerator is None else accelerator.num_processes,
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "fggp_hub_version": __version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }

