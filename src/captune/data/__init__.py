"""Datasets in, ImageRecords out: one record type for Flickr8K, Karpathy, COCO, JSONL/CSV and imagefolder.

`images.open_image` is the only place images are opened; `check` surveys a dataset; `synth` writes
a seeded fine-grained benchmark in the Flickr8K layout.
"""

from captune.data.images import DEFAULT_MAX_PIXELS, open_image
from captune.data.load import FORMATS, detect_format, load_dataset, load_dataset_from_config
from captune.data.records import SPLITS, ImageRecord, LoadedDataset, normalize_caption

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "SPLITS",
    "ImageRecord",
    "LoadedDataset",
    "detect_format",
    "load_dataset",
    "load_dataset_from_config",
    "normalize_caption",
    "open_image",
]
