"""Check a dataset before training: every bad file is found up front, not after an hour.

``validate_dataset`` reads each mask once and only the header of each image (PIL ``verify``),
so checking the whole dataset costs about as much as one pass over the masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from unetzoo.data.io import DataError, file_channels, looks_binary, map_labels, read_mask
from unetzoo.io import EXIF_ORIENTATION, stack_problem

__all__ = ["DataProblem", "ValidationReport", "validate_dataset"]

_MAX_LISTED = 10


@dataclass(frozen=True)
class DataProblem:
    """One bad sample: which file, what kind of problem, and how to fix it."""

    path: Path
    kind: str  # "unreadable" | "size_mismatch" | "missing_mask" | "bad_labels"
    message: str
    index: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found.

    ``dataset, problems = validate_dataset(...)`` unpacks the two fields most callers need.

    Attributes:
        dataset: the dataset to train on (the input, or a ``Subset`` without the bad samples).
        problems: the bad samples that were skipped (empty when all is well).
        num_samples: samples kept.
        class_pixels: pixel count per class over the kept masks (useful for class weights).
        ignored_pixels: pixels labelled ``ignore_index``.
    """

    dataset: Dataset
    problems: list[DataProblem] = field(default_factory=list)
    num_samples: int = 0
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0

    def __iter__(self) -> Iterator[object]:
        return iter((self.dataset, self.problems))

    def summary(self) -> str:
        """One line for logs: samples, class frequencies, skipped files."""
        total = sum(self.class_pixels) or 1
        freq = ", ".join(f"{c}: {n / total:.1%}" for c, n in enumerate(self.class_pixels))
        skipped = f"; skipped {len(self.problems)} bad sample(s)" if self.problems else ""
        return f"{self.num_samples} samples; class pixels {freq}{skipped}"


def _base_and_indices(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """Unwrap (nested) ``Subset``s to the reader and the indices into it."""
    indices = list(range(len(dataset)))  # type: ignore[arg-type]
    while isinstance(dataset, Subset):
        indices = [int(dataset.indices[i]) for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _image_size(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and the PIL mode, after decoding the file: a truncated JPEG passes
    ``Image.verify``.

    JPEGs are decoded at 1/8 scale (``draft``), which still reads every byte of the file. The
    size is the one the readers give: an EXIF orientation that turns the image swaps it.
    """
    with Image.open(path) as im:
        size, mode = im.size, im.mode
        if stack := stack_problem(im, path):  # as the readers refuse it (open_image)
            raise DataError(stack, path=path)
        if im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # a quarter turn (or a transpose)
            size = size[::-1]
        if im.format == "JPEG":
            im.draft(im.mode, (max(im.size[0] // 8, 1), max(im.size[1] // 8, 1)))
        im.load()
    return size, mode


def _check_labels(mask: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    values = np.unique(mask)
    return values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]


def _label_fix(bad: np.ndarray, num_classes: int, label_map: dict | None = None) -> str:
    values = sorted(set(bad.tolist()))
    if label_map and set(values) <= set(label_map.values()):  # the map made them, not the file
        made = {k: v for k, v in label_map.items() if v in values}
        return (f"they come from label_map {made}: map to classes 0..{num_classes - 1}, or set num_classes to at "
                f"least {max(values) + 1}")
    fix = f"set num_classes to at least {int(bad.max()) + 1} or map raw values to classes with label_map"
    if num_classes == 2 and set(values) <= set(range(1, 255)):
        fix = "for 0/255 masks with soft edges pass binary=True (threshold at 128); else " + fix
    elif len(values) <= 8 and min(values) > 2 * num_classes:  # a few scattered values: grey levels, not classes
        example = {v: i + 1 for i, v in enumerate(values[:3])}
        fix = (f"a few scattered values like these are usually grey levels of colours (a palette mask saved as "
               f"grey?), not class indices: map them with label_map, e.g. {example}, or restore the palette "
               f"masks; else {fix}")
    return fix


Checked = tuple[DataProblem | None, np.ndarray | None]
# what PIL and the readers raise for a bad file (DataError is a ValueError)
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _missing_message(base: Dataset, image: Path) -> str:
    """Why ``image`` has no labels: the files a reader looked for and did not find (DRIVE's
    annotation or field-of-view mask), else its mask."""
    absent = getattr(base, "missing_files", {}).get(image)
    if absent:
        return f"image {image} lacks {' and '.join(str(p) for p in absent)}; add it or remove the image"
    return f"image {image} has no mask; add it or remove the image"


def _auto_binary(ds: Dataset) -> bool:
    """Whether ``ds`` decides mask by mask if a mask is 0/255 (``binary=None``, no label map,
    the readers' own ``load_target``)."""
    from unetzoo.data.datasets import PairedDataset

    return (getattr(ds, "binary", False) is None and getattr(ds, "label_map", None) is None
            and type(ds).load_target is PairedDataset.load_target)


def _load_target(ds: Dataset, index: int, auto: bool, read_as: dict[str, dict[int, Path]]) -> np.ndarray:
    """``ds.load_target(index)``. In auto mode it also notes in ``read_as`` the masks read as
    0/255 ones (``"0/255"``: only 0 and 255, some 255) and those kept as index masks with
    values beyond 0 and 1 (``"index"``); all-background and 0/1 masks read the same either way."""
    if not auto:
        return ds.load_target(index)
    path = ds.files[index][1]
    raw, mode = read_mask(path)
    if looks_binary(raw, mode):
        if (raw == 255).any():
            read_as["0/255"][index] = path
    elif (raw > 1).any():
        read_as["index"][index] = path
    return map_labels(raw, mode=mode)


def _check_auto_binary(read_as: dict[str, list[Path]], num_classes: int, where: str) -> None:
    """Auto mode reads each mask on its own. Refuse a dataset with both 0/255 masks and index
    masks, or a multi-class one with 0/255 masks: there a mask holding only 0 and the ignore
    value 255 would silently turn its ignored pixels into class 1."""
    binary, index = read_as["0/255"], read_as["index"]
    if not binary or (not index and num_classes <= 2):
        return
    if not index:  # only 0/255 masks: most likely binary masks and a num_classes meant for more
        raise DataError(
            f"{where}: {len(binary)} mask(s) hold only 0 and 255 (e.g. {binary[0]}) but num_classes is {num_classes}. "
            "For binary 0/255 masks set num_classes=2 (model.num_classes: 2; or 1 with a bce loss); if 255 marks "
            "ignored pixels of index masks, say binary=False (data.binary: false)"
        )
    found = (f"{len(binary)} mask(s) hold only 0 and 255 (e.g. {binary[0]}) and {len(index)} hold other "
             f"values (e.g. {index[0]})")
    raise DataError(
        f"cannot tell how to read the masks of {where}: {found}. Auto mode would read the first as 0/255 "
        "masks (255 -> class 1) and keep the others' values. Say which reading is meant: binary=False "
        "(data.binary: false) for index masks where 255 means ignore, binary=True (data.binary: true) for "
        "0/255 masks, or a label_map"
    )


def _check_channels(seen: dict[int, list[Path]], where: str) -> None:
    """With ``channels=None`` each image keeps its file's colour model; grey and colour files
    in one dataset would fail at the first batch."""
    seen = {c: paths for c, paths in seen.items() if paths}
    if len(seen) > 1:
        grey, colour = seen[1], seen[3]
        raise DataError(
            f"{where} mixes grey and colour images: {len(grey)} grey (e.g. {grey[0]}) and {len(colour)} colour "
            f"(e.g. {colour[0]}); pass channels=1 or channels=3 (data.channels) to convert them all"
        )


def _check_sample(ds: Dataset, index: int, num_classes: int, ignore_index: int, auto: bool,
                  read_as: dict[str, dict[int, Path]], seen: dict[int, dict[int, Path]]) -> Checked:
    """One sample of a reader: image header, mask, sizes and label values. Notes the masks'
    reading in ``read_as`` (see :func:`_load_target`) and each image's channels in ``seen``."""
    image_path, mask_path = ds.files[index]
    try:
        (width, height), mode = _image_size(image_path)
        if getattr(ds, "channels", 0) is None:  # each file keeps its colour model: they must agree
            seen.setdefault(file_channels(mode), {})[index] = image_path
    except DataError as exc:  # names the file and the fix already
        return DataProblem(image_path, "unreadable", str(exc), index), None
    except _READ_ERRORS as exc:
        msg = f"cannot read image {image_path}: {exc}; replace or remove it"
        return DataProblem(image_path, "unreadable", msg, index), None
    try:
        mask = _load_target(ds, index, auto, read_as)
    except _READ_ERRORS as exc:
        culprit = getattr(exc, "path", None)  # a DataError naming the file at fault, e.g. DRIVE's field-of-view mask
        if culprit is not None:
            return DataProblem(culprit, "unreadable", str(exc), index), None
        msg = f"cannot read mask {mask_path}: {exc}; replace or remove it"
        return DataProblem(mask_path, "unreadable", msg, index), None
    if mask.shape != (height, width):
        msg = (f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
               f"{width}x{height}; masks must have the size of their image")
        return DataProblem(mask_path, "size_mismatch", msg, index), None
    bad = _check_labels(mask, num_classes, ignore_index)
    if bad.size:
        label_map = getattr(ds, "label_map", None)
        mapped = " (after label_map)" if label_map else ""
        msg = (f"mask {mask_path} has label values {bad.tolist()[:8]}{mapped} outside classes 0..{num_classes - 1} "
               f"and ignore_index {ignore_index}; {_label_fix(bad, num_classes, label_map)}")
        return DataProblem(mask_path, "bad_labels", msg, index), None
    return None, mask


def _check_generic(ds: Dataset, index: int, num_classes: int, ignore_index: int) -> Checked:
    """Datasets without ``files``/``load_target``: load the sample and check its mask."""
    where = Path(f"<sample {index}>")
    try:
        _, mask = ds[index]
        mask = torch.as_tensor(mask).cpu().numpy()
    except Exception as exc:  # arbitrary user datasets: any failure means the sample is unusable
        return DataProblem(where, "unreadable", f"cannot load sample {index}: {exc}", index), None
    bad = _check_labels(mask, num_classes, ignore_index)
    if bad.size:
        msg = (f"sample {index} has label values {bad.tolist()[:8]} outside classes 0..{num_classes - 1}; "
               f"{_label_fix(bad, num_classes)}")
        return DataProblem(where, "bad_labels", msg, index), None
    return None, mask


def _raise(problems: list[DataProblem], where: str, *, none_left: bool = False) -> None:
    lines = [f"  - {p.message}" for p in problems[:_MAX_LISTED]]
    if len(problems) > _MAX_LISTED:
        lines.append(f"  ... and {len(problems) - _MAX_LISTED} more")
    fix = "no usable sample is left; fix the files" if none_left else \
        "fix the files, or pass skip_bad=True (in a training config: data.skip_bad: true) to train without them"
    raise DataError(f"{len(problems)} bad sample(s) in {where}:\n" + "\n".join(lines) + f"\n{fix}.")


def validate_dataset(
    dataset: Dataset,
    num_classes: int,
    *,
    ignore_index: int = 255,
    skip_bad: bool = False,
) -> ValidationReport:
    """Check every sample of ``dataset`` and report (or raise on) bad ones.

    Checks: unreadable image or mask, image/mask size mismatch, image without a mask, label
    values outside ``[0, num_classes)`` other than ``ignore_index``, empty dataset. Works on
    the readers of :mod:`unetzoo.data` and on ``Subset``s of them (e.g. from
    :func:`~unetzoo.data.split_dataset`); other datasets are checked by loading each sample.

    Args:
        dataset: the dataset to check.
        num_classes: number of classes the model predicts (a one-output model: 2).
        ignore_index: label that marks ignored pixels.
        skip_bad: drop bad samples and report them instead of raising.

    Returns:
        A :class:`ValidationReport`; ``report.dataset`` is the dataset to train on.

    Raises:
        DataError: if the dataset is empty, if a sample is bad and ``skip_bad`` is False,
            or if no sample is left.
    """
    num_classes = max(num_classes, 2)
    base, indices = _base_and_indices(dataset)
    where = str(getattr(base, "root", type(base).__name__))
    problems = [DataProblem(p, "missing_mask", _missing_message(base, p)) for p in getattr(base, "missing_masks", [])]
    if not indices:
        if problems:
            _raise(problems, where, none_left=True)
        raise DataError(f"dataset {where} is empty; check the folder and the file list")
    readers = hasattr(base, "files") and hasattr(base, "load_target")
    auto = readers and _auto_binary(base)
    read_as: dict[str, dict[int, Path]] = {"0/255": {}, "index": {}}
    seen: dict[int, dict[int, Path]] = {}  # channels -> {index: image path}, when the files decide
    counts = np.zeros(num_classes, dtype=np.int64)
    ignored, good = 0, []
    for position, index in enumerate(indices):
        if readers:
            problem, mask = _check_sample(base, index, num_classes, ignore_index, auto, read_as, seen)
        else:
            problem, mask = _check_generic(base, index, num_classes, ignore_index)
        if problem is not None:
            problems.append(problem)
            continue
        good.append(position)
        valid = mask[mask != ignore_index]
        counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
        ignored += int(mask.size - valid.size)
    if problems and not skip_bad:
        _raise(problems, where)
    kept = {indices[p] for p in good}

    def of_kept(found: dict[Any, dict[int, Path]]) -> dict[Any, list[Path]]:  # skipped samples say nothing
        return {key: [path for i, path in paths.items() if i in kept] for key, paths in found.items()}

    _check_auto_binary(of_kept(read_as), num_classes, where)
    _check_channels(of_kept(seen), where)
    if not good:
        _raise(problems, where, none_left=True)
    dataset = dataset if len(good) == len(indices) else Subset(dataset, good)
    return ValidationReport(dataset, problems, len(good), counts.tolist(), ignored)
