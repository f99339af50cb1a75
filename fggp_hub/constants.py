"""Dataset constants shared by models (default_cfgs) and data (normalisation)."""

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Every result computed on the shared copy must carry this label (its pixels are JPEG-degraded).
CIFAR10_JPEG_LABEL = "CIFAR-10 (JPEG-q75 copy)"
