"""The PASCAL VOC segmentation layout (also the seed project's ``VOCdevkit`` recipe)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from unetzoo.data.datasets import SegmentationFolder, Transform
from unetzoo.data.io import DataError

__all__ = ["VOC_CLASSES", "VOCSegmentation"]

#: The 21 VOC classes, index = label value in ``SegmentationClass`` PNGs.
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _voc_root(root: Path) -> Path:
    """Accept the VOC2012 folder itself or a folder holding ``VOCdevkit/VOC2012``."""
    for candidate in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(
        f"{root} is not a VOC folder: expected JPEGImages/, SegmentationClass/ and "
        "ImageSets/Segmentation/ inside it (or inside VOCdevkit/VOC2012)"
    )


def _read_split(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"split file {path} not found; expected one image id per line")
    ids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split file {path} is empty")
    return ids


class VOCSegmentation(SegmentationFolder):
    """PASCAL VOC segmentation: ``JPEGImages/*.jpg`` with palette PNG labels.

    Label PNGs hold class indices 0..20 in their palette; the white object borders (255) are
    the ignore label. The samples are those listed in ``ImageSets/Segmentation/<split>.txt``.

    Args:
        root: the ``VOC2012`` folder (or a folder holding ``VOCdevkit/VOC2012``).
        split: name of the list file, e.g. ``"train"``, ``"val"``, ``"trainval"``.
        mask_dir: label folder; ``"SegmentationClassAug"`` for the SBD-augmented labels.
        transform: joint ``transform(image, mask)``; see :func:`~unetzoo.data.build_transforms`.
        ignore_index: label of the ignored borders (255 in VOC).

    Example:
        >>> train = VOCSegmentation("VOCdevkit/VOC2012", split="train")
        >>> len(VOC_CLASSES)  # num_classes
        21
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        mask_dir: str = "SegmentationClass",
        transform: Transform | None = None,
        ignore_index: int = 255,
        label_map: Mapping[int, int] | None = None,
        channels: int = 3,
    ) -> None:
        voc = _voc_root(Path(root))
        ids = _read_split(voc / "ImageSets" / "Segmentation" / f"{split}.txt")
        super().__init__(
            voc, image_dir="JPEGImages", mask_dir=mask_dir, transform=transform, label_map=label_map,
            binary=False, ignore_index=ignore_index, files=ids, channels=channels,
        )
        self.split = split
