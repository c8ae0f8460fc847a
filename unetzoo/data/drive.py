"""The DRIVE retinal-vessel layout (the WZMIAOMIAO U-Net recipe in SEED_SYSTEMS.md section 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetzoo.data.datasets import PairedDataset, Transform
from unetzoo.data.io import DataError, list_images, open_image

__all__ = ["DRIVEDataset"]

_SPLITS = {"training": "training", "train": "training", "test": "test"}


def _grey(path: Path) -> np.ndarray:
    """A GIF/PNG mask as grey values 0..255 (GIF palettes are resolved, not taken as indices)."""
    return np.asarray(open_image(path).convert("L"))


class DRIVEDataset(PairedDataset):
    """DRIVE: ``<split>/images/*.tif``, ``1st_manual/*_manual1.gif``, ``mask/*_mask.gif``.

    The label is the manual vessel annotation / 255 -> {0 background, 1 vessel}; pixels
    outside the field-of-view mask get ``ignore_index`` so losses and metrics skip them.

    Args:
        root: the DRIVE folder holding ``training/`` and ``test/``.
        split: ``"training"`` (alias ``"train"``) or ``"test"``.
        transform: joint ``transform(image, mask)``; see :func:`~unetzoo.data.build_transforms`.
        ignore_index: label of pixels outside the field of view.

    Attributes:
        fov_files: the field-of-view mask of each sample.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        *,
        transform: Transform | None = None,
        ignore_index: int = 255,
        channels: int = 3,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be 'training' or 'test', got {split!r}")
        super().__init__(root, transform=transform, binary=True, ignore_index=ignore_index, channels=channels)
        self.split = _SPLITS[split]
        folder = self.root / self.split
        images = list_images(folder / "images")
        if not images:
            raise DataError(f"no images found in {folder / 'images'}; check the DRIVE root")
        self.fov_files: list[Path] = []
        self.missing_files: dict[Path, list[Path]] = {}  # of each image left out: its absent label files
        for image in images:
            number = image.stem.split("_")[0]
            manual = folder / "1st_manual" / f"{number}_manual1.gif"
            fov = folder / "mask" / f"{image.stem}_mask.gif"
            if absent := [p for p in (manual, fov) if not p.is_file()]:
                self.missing_masks.append(image)
                self.missing_files[image] = absent
                continue
            self.files.append((image, manual))
            self.fov_files.append(fov)

    def load_target(self, index: int) -> np.ndarray:
        """Vessel labels {0, 1} with ``ignore_index`` outside the field of view."""
        manual_path, fov_path = self.files[index][1], self.fov_files[index]
        manual, fov = _grey(manual_path), _grey(fov_path)
        if manual.shape != fov.shape:
            raise DataError(
                f"{fov_path} is {fov.shape[1]}x{fov.shape[0]} but {manual_path} is "
                f"{manual.shape[1]}x{manual.shape[0]}; the field-of-view mask must match the annotation",
                path=fov_path,
            )
        label = (manual >= 128).astype(np.int64)
        label[fov < 128] = self.ignore_index
        return label
