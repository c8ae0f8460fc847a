"""Segmentation datasets: a folder of image/mask pairs, and the shared machinery of all readers.

Every dataset here returns ``(image, mask)``: ``image`` a float tensor ``C x H x W`` (values in
[0, 1] before normalisation) and ``mask`` a long tensor ``H x W`` of class indices, with
``ignore_index`` (default 255) marking pixels that losses and metrics skip. Before the
transform, image and mask are wrapped as ``tv_tensors.Image`` / ``tv_tensors.Mask`` so a
torchvision.transforms.v2 pipeline (see :func:`~unetzoo.data.build_transforms`) augments them
together.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors

from unetzoo.data.io import DataError, list_images, map_labels, read_image, read_mask

__all__ = ["PairedDataset", "SegmentationFolder", "split_dataset"]

Transform = Callable[[Any, Any], tuple[Any, Any]]
FileSpec = Sequence[str | tuple[str | Path, str | Path]]


class PairedDataset(Dataset):
    """Base class of the readers: a list of ``(image_path, mask_path)`` pairs plus label rules.

    Subclasses fill :attr:`files` and may override :meth:`load_target` (DRIVE adds its
    field-of-view mask there). :func:`~unetzoo.data.validate_dataset` relies on
    :meth:`load_target` and :attr:`files`, so it checks every reader the same way.

    Attributes:
        root: the dataset folder (named in error messages).
        files: ``(image_path, mask_path)`` pairs, one per sample.
        missing_masks: images found without a matching mask (reported by ``validate_dataset``).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        transform: Transform | None = None,
        label_map: Mapping[int, int] | None = None,
        binary: bool | None = None,
        ignore_index: int = 255,
        channels: int | None = None,
    ) -> None:
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None (as in the files), 1 or 3; got {channels!r}")
        self.root = Path(root)
        self.transform = transform
        self.label_map = dict(label_map) if label_map is not None else None
        self.binary = binary
        self.ignore_index = ignore_index
        self.channels = channels
        self.files: list[tuple[Path, Path]] = []
        self.missing_masks: list[Path] = []

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> np.ndarray:
        """The image of sample ``index`` as float32 ``C x H x W`` in [0, 1] (no transform)."""
        return read_image(self.files[index][0], self.channels)

    def load_target(self, index: int) -> np.ndarray:
        """The class-index mask of sample ``index`` as int64 ``H x W`` (no transform)."""
        raw, mode = read_mask(self.files[index][1])
        return map_labels(raw, mode=mode, label_map=self.label_map, binary=self.binary,
                          ignore_index=self.ignore_index)

    @property
    def num_channels(self) -> int:
        """Channels of the images as returned (read from the first sample)."""
        if self.channels is not None:
            return self.channels
        if not self.files:
            raise DataError(f"dataset at {self.root} is empty; cannot tell its number of channels")
        return int(self.load_image(0).shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(torch.from_numpy(self.load_image(index)))
        mask = tv_tensors.Mask(torch.from_numpy(self.load_target(index)))
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        # plain tensors out: the tv_tensor subclasses are only needed inside the transform
        image = torch.as_tensor(image).as_subclass(torch.Tensor).float()
        return image, torch.as_tensor(mask).as_subclass(torch.Tensor).long()

    def with_transform(self, transform: Transform | None) -> PairedDataset:
        """A shallow copy of this dataset that applies ``transform`` (files are shared)."""
        clone = copy.copy(self)
        clone.transform = transform
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root='{self.root}', samples={len(self)})"


def _by_stem(paths: list[Path]) -> dict[str, Path]:
    """``paths`` by file stem; two files of one stem (``a.png`` and ``a.tif``) are refused: which
    one pairs with the other folder's ``a`` would be a guess."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    if clashes := [group for group in by_stem.values() if len(group) > 1]:
        listed = "; ".join(" and ".join(p.name for p in group) for group in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise DataError(f"{clashes[0][0].parent} holds {len(clashes)} file name(s) with two or more extensions: "
                        f"{listed}{more}; images and masks are paired by name without extension, so keep one "
                        "file of each name", path=clashes[0][0])
    return {stem: group[0] for stem, group in by_stem.items()}


def _pair_by_stem(image_dir: Path, mask_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    images = list(_by_stem(list_images(image_dir)).values())
    masks = _by_stem(list_images(mask_dir))
    pairs, missing = [], []
    for image in images:
        mask = masks.get(image.stem)
        if mask is None:
            missing.append(image)
        else:
            pairs.append((image, mask))
    return pairs, missing


def _select(
    pairs: list[tuple[Path, Path]], missing: list[Path], files: FileSpec, folder: Path
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Keep the samples named in ``files`` (stems, or explicit pairs) in that order."""
    by_stem = {image.stem: (image, mask) for image, mask in pairs}
    missing_by_stem = {image.stem: image for image in missing}
    chosen, lost = [], []
    for item in files:
        if not isinstance(item, str):
            image, mask = (Path(p) for p in item)
            if mask.is_file():
                chosen.append((image, mask))
            else:
                lost.append(image)
            continue
        if item in by_stem:
            chosen.append(by_stem[item])
        elif item in missing_by_stem:
            lost.append(missing_by_stem[item])
        else:
            raise DataError(f"no image named '{item}.*' in {folder}; check the file list")
    return chosen, lost


class SegmentationFolder(PairedDataset):
    """Images and masks in two folders, paired by file stem (``images/a.jpg`` <-> ``masks/a.png``).

    Masks are single-channel PNGs (or any PIL-readable format). 0/255 masks become {0, 1};
    palette and index masks keep their values; ``label_map`` maps raw values explicitly
    (see :func:`~unetzoo.data.io.map_labels`).

    Args:
        root: dataset folder holding ``image_dir`` and ``mask_dir``.
        image_dir: sub-folder of images, relative to ``root``.
        mask_dir: sub-folder of masks, relative to ``root``.
        transform: called as ``transform(image, mask)`` on ``tv_tensors.Image`` /
            ``tv_tensors.Mask``; e.g. :func:`~unetzoo.data.build_transforms`.
        label_map: explicit ``{raw value: class}`` mapping.
        binary: ``True`` thresholds masks at 128, ``False`` keeps raw values, ``None``
            auto-detects 0/255 masks.
        ignore_index: label of pixels to ignore (kept as it is, never a class).
        files: restrict to these samples, in this order: file stems, or explicit
            ``(image_path, mask_path)`` pairs.
        channels: ``None`` keeps the file's colour model (grey -> 1 channel, for
            ``in_chans=1`` models), ``1`` or ``3`` converts.

    Raises:
        DataError: if a folder is missing or holds no images.

    Example:
        >>> ds = SegmentationFolder("unetzoo/assets/nuclei", channels=3)
        >>> image, mask = ds[0]   # (3, 256, 256) float, (256, 256) long in {0, 1}
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_dir: str = "images",
        mask_dir: str = "masks",
        transform: Transform | None = None,
        label_map: Mapping[int, int] | None = None,
        binary: bool | None = None,
        ignore_index: int = 255,
        files: FileSpec | None = None,
        channels: int | None = None,
    ) -> None:
        super().__init__(
            root, transform=transform, label_map=label_map, binary=binary,
            ignore_index=ignore_index, channels=channels,
        )
        image_folder = self.root / image_dir
        pairs, missing = _pair_by_stem(image_folder, self.root / mask_dir)
        if files is not None:
            pairs, missing = _select(pairs, missing, files, image_folder)
        if not pairs and not missing:
            raise DataError(
                f"no images found in {image_folder} (looked for .png, .jpg, .tif, ...); "
                "check the dataset root and image_dir"
            )
        self.files, self.missing_masks = pairs, missing


def split_dataset(
    dataset: Dataset,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    train_transform: Transform | None = None,
    val_transform: Transform | None = None,
) -> tuple[Subset, Subset]:
    """Split ``dataset`` into deterministic train / validation subsets.

    The same ``dataset``, ``val_fraction`` and ``seed`` always give the same split (a seeded
    permutation, independent of the global RNG); indices inside each subset are sorted.

    Args:
        dataset: any map-style dataset.
        val_fraction: share of samples held out, in (0, 1); at least one sample goes to
            each side.
        seed: seed of the permutation.
        train_transform: if given (and ``dataset`` has ``with_transform``), the training
            subset applies this transform.
        val_transform: likewise for the validation subset.

    Returns:
        ``(train_subset, val_subset)``.

    Raises:
        ValueError: for a fraction outside (0, 1) or fewer than two samples.
    """
    n = len(dataset)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2:
        missing = getattr(dataset, "missing_masks", [])
        hint = (f"; {len(missing)} image(s) have no mask, e.g. {missing[0]}: masks pair with images by file name "
                f"without extension (the image {missing[0].name} needs a mask named {missing[0].stem}.*)" if missing
                else "")
        raise DataError(f"cannot split a dataset of {n} sample(s) into train and validation{hint}")
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])

    def view(transform: Transform | None) -> Dataset:
        if transform is None:
            return dataset
        if not hasattr(dataset, "with_transform"):
            raise TypeError(f"{type(dataset).__name__} has no with_transform(); set its transform instead")
        return dataset.with_transform(transform)

    return Subset(view(train_transform), train_idx), Subset(view(val_transform), val_idx)
