"""Reading images and label masks from disk, and turning raw mask values into class indices.

Everything here works on plain PIL images and numpy arrays; the datasets wrap the results in
``tv_tensors`` so that torchvision.transforms.v2 can augment image and mask together.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from unetzoo.io import IMAGE_EXTENSIONS, _to_array, stack_problem, upright  # one list of image types, one decoder

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "file_channels",
    "list_images",
    "looks_binary",
    "map_labels",
    "open_image",
    "read_image",
    "read_mask",
]

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class DataError(ValueError):
    """A dataset problem that would spoil training: the message names the file(s) and the fix.

    ``path``, when given, is the one file at fault, and the message already names it.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped).

    Raises:
        DataError: if ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder {folder} does not exist (or is not a directory); check the dataset root")
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def open_image(path: Path) -> Image.Image:
    """Open ``path`` with PIL and decode it fully, turning PIL errors into :class:`DataError`.

    An EXIF orientation (a phone's JPEG stored sideways) is applied, as viewers, annotation
    tools and ``unetzoo predict`` apply it, so images and masks line up as people see them.
    """
    try:
        with Image.open(path) as im:
            if stack := stack_problem(im, path):  # as unetzoo.io.read_image refuses it
                raise DataError(stack, path=Path(path))
            im.load()
            return upright(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three for bad files
        raise DataError(f"cannot read {path}: {exc}; replace or remove the file", path=Path(path)) from exc


def file_channels(mode: str) -> int:
    """Channels :func:`read_image` gives a file of PIL ``mode`` with ``channels=None``."""
    return 1 if mode in _GREY_MODES else 3


def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """Read an image as a float32 array ``C x H x W`` with values in [0, 1].

    Args:
        path: image file.
        channels: ``None`` keeps the file's colour model (grey -> 1 channel, colour -> 3;
            alpha is dropped); ``1`` converts to grey; ``3`` converts to RGB.

    Raises:
        DataError: if the file cannot be decoded.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    im = open_image(path)
    if channels is None:
        channels = file_channels(im.mode)
    # the same decoding as unetzoo.io.read_image (what predict() reads, EXIF orientation too): 16-bit
    # and float grey images keep their values (repeated for 3 channels), not PIL's 8-bit conversion
    arr = _to_array(im, channels)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0  # by the type's range, as unetzoo.predict scales it
    else:  # float images ("F") are taken as they are
        out = arr.astype(np.float32)
    return out[None] if out.ndim == 2 else np.ascontiguousarray(out.transpose(2, 0, 1))


def read_mask(path: Path) -> tuple[np.ndarray, str]:
    """Read a label mask as an integer ``H x W`` array of raw values, plus the PIL mode.

    Palette ("P") PNGs give their palette indices (the VOC convention); colour masks are
    rejected with a hint, because their meaning (which colour is which class) is unknown.

    Raises:
        DataError: if the file cannot be decoded or is not a single-channel mask.
    """
    im = open_image(path)
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise DataError(
                f"mask {path} is a colour image; save it as a single-channel index mask "
                "(mode 'L' or a palette PNG) with one value per class",
                path=Path(path),
            )
        return arr[..., 0].astype(np.int64), "L"
    if mode in ("LA", "1"):  # 1-bit masks as 0/255, like the 8-bit masks they stand for
        im, mode = im.convert("L"), "L"
    raw = np.asarray(im).astype(np.int64)
    if mode == "P" and _grey_0_255(im, raw):
        mode = "L"  # a 0/255 mask saved with a grey palette (convert("P"), MATLAB's gray(256)): its values
    return raw, mode  # are its grey levels, so it reads as the 0/255 mask it shows, not as class 255


def _grey_0_255(im: Image.Image, raw: np.ndarray) -> bool:
    """Whether a palette mask uses only indices 0 and 255, each coloured as that grey level."""
    used = np.unique(raw)
    if not np.isin(used, (0, 255)).all():
        return False
    colours = np.asarray(im.getpalette() or [], dtype=np.int64)
    colours = np.pad(colours, (0, max(0, 768 - colours.size)))[:768].reshape(256, 3)
    return bool((colours[used] == used[:, None]).all())


def looks_binary(raw: np.ndarray, mode: str = "L") -> bool:
    """Whether :func:`map_labels` in auto mode reads this raw mask as a 0/255 mask: not a
    palette mask, and every value 0 or 255."""
    return mode != "P" and bool(np.isin(raw, (0, 255)).all())


def map_labels(
    raw: np.ndarray,
    *,
    mode: str = "L",
    label_map: Mapping[int, int] | None = None,
    binary: bool | None = None,
    ignore_index: int = 255,
) -> np.ndarray:
    """Turn raw mask values into class indices.

    Rules, first match wins:

    * ``label_map`` given: each raw value found in it becomes its class; other values pass
      through unchanged (so :func:`~unetzoo.data.validate_dataset` can report them).
    * ``binary=True``: values >= 128 become 1, the rest 0 (0/255 masks, also anti-aliased ones);
      in palette masks every index other than 0 and ``ignore_index`` becomes 1 (VOC draws its
      "ignore" border as index 255, which stays ignored).
    * ``binary=None`` (auto): a non-palette mask whose values are all in {0, 255} is a 0/255
      mask and becomes {0, 1}; anything else (palette or index masks) is kept as it is.
    * ``binary=False``: values are kept as they are.

    Note:
        In auto mode an index mask holding only 0 and the ignore value 255 is read as a 0/255
        mask; pass ``binary=False`` for index masks that use 255 as "ignore".
        :func:`~unetzoo.data.validate_dataset` refuses a dataset where auto mode read some
        masks as 0/255 and kept others' values, or a multi-class one where it read any.
    """
    if label_map is not None:
        out = raw.copy()
        for value, cls in label_map.items():
            out[raw == int(value)] = int(cls)
        return out
    if binary is None:
        if looks_binary(raw, mode):
            return (raw == 255).astype(np.int64)
    if binary:
        if mode == "P":  # palette indices, not grey levels: any class other than 0 is foreground
            return np.where(raw == ignore_index, ignore_index, raw > 0).astype(np.int64)
        return (raw >= 128).astype(np.int64)
    return raw
