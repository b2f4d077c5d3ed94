"""Fashion-MNIST: files.py finds, verifies and decodes the IDX files and draws the splits; batches.py serves
batches (the fast in-memory path and the classic torchvision one) and augments them."""

from fashionmlp.data.batches import (
    TensorSplit,
    augment,
    augmented,
    check_trainable,
    classic_batches,
    epoch_order,
    fast_batches,
    images_per_epoch,
    normalize,
)
from fashionmlp.data.files import (
    CLASSES,
    ENV_VAR,
    FILES,
    MEAN,
    STD,
    FashionMNIST,
    FileStatus,
    Split,
    download,
    ensure_files,
    file_status,
    load_data,
    load_fashion_mnist,
    load_test,
    md5sum,
    read_idx,
    resolve_data_dir,
    split_indices,
)

__all__ = ["CLASSES", "ENV_VAR", "FILES", "MEAN", "STD", "FashionMNIST", "FileStatus", "Split", "TensorSplit",
           "augment", "augmented", "check_trainable", "classic_batches", "download", "ensure_files", "epoch_order",
           "fast_batches", "file_status", "images_per_epoch", "load_data", "load_test", "load_fashion_mnist", "md5sum",
           "normalize", "read_idx", "resolve_data_dir", "split_indices"]
