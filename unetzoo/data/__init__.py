"""Datasets, joint augmentation and data checks for fine-tuning.

    >>> from unetzoo.data import SegmentationFolder, build_transforms, split_dataset, validate_dataset
    >>> ds = SegmentationFolder("unetzoo/assets/nuclei", channels=3)
    >>> report = validate_dataset(ds, num_classes=2)          # raises DataError on bad files
    >>> train, val = split_dataset(report.dataset, 0.2, seed=0,
    ...                            train_transform=build_transforms(True, size=256),
    ...                            val_transform=build_transforms(False))
"""

from pathlib import Path

from unetzoo.data.collate import pad_collate
from unetzoo.data.datasets import PairedDataset, SegmentationFolder, split_dataset
from unetzoo.data.drive import DRIVEDataset
from unetzoo.data.io import DataError, map_labels, read_image, read_mask
from unetzoo.data.transforms import Normalize, RandomTranspose, build_transforms
from unetzoo.data.validate import DataProblem, ValidationReport, validate_dataset
from unetzoo.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "VOC_CLASSES",
    "DRIVEDataset",
    "DataError",
    "DataProblem",
    "Normalize",
    "PairedDataset",
    "RandomTranspose",
    "SegmentationFolder",
    "VOCSegmentation",
    "ValidationReport",
    "build_transforms",
    "map_labels",
    "nuclei_root",
    "pad_collate",
    "read_image",
    "read_mask",
    "split_dataset",
    "validate_dataset",
]


def nuclei_root() -> Path:
    """Folder of the CC0 nuclei set shipped with the package (``images/`` + ``masks/``)."""
    return Path(__file__).resolve().parents[1] / "assets" / "nuclei"
