"""Data: any image-classification source -> cached uint8 tensors -> augmented batches on the device.

    from fggp_hub.data import load_cifar10, make_loader
    train = load_cifar10("train")            # source arg, $FGGP_CIFAR10_PATH, or uoft-cs/cifar10
    loader = make_loader(train, 64, train=True, device="cuda", seed=0)
    for epoch in range(160):
        loader.set_epoch(epoch)
        for images, labels in loader: ...    # float32, normalised, pad-crop-flipped on the device

Depends on datasets and torch.
"""
from .augment import BatchAugment, BatchNormalize, crop_flip, normalize, sample_crop_flip
from .cache import CACHE_DIR_ENV, CacheCorruptedError, ImageTensors, default_cache_dir, read_cache, write_cache
from .decode import decode_image
from .errors import DataSourceError, DatasetFormatError, DatasetUnavailableError
from .load import load_cifar10, load_image_dataset
from .loader import BatchLoader, make_loader
from .streaming import StreamingLoader, make_streaming_loaders, open_image_source
from .sources import CIFAR10_HUB_ID, CIFAR10_PATH_ENV, ResolvedSource, dataset_label, detect_columns, resolve_source

__all__ = [
    "CACHE_DIR_ENV",
    "CIFAR10_HUB_ID",
    "CIFAR10_PATH_ENV",
    "BatchAugment",
    "BatchLoader",
    "BatchNormalize",
    "CacheCorruptedError",
    "DataSourceError",
    "DatasetFormatError",
    "DatasetUnavailableError",
    "ImageTensors",
    "ResolvedSource",
    "StreamingLoader",
    "crop_flip",
    "dataset_label",
    "decode_image",
    "default_cache_dir",
    "detect_columns",
    "load_cifar10",
    "load_image_dataset",
    "make_loader",
    "make_streaming_loaders",
    "normalize",
    "open_image_source",
    "read_cache",
    "resolve_source",
    "sample_crop_flip",
    "write_cache",
]
