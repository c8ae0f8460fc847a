"""Reading images and writing segmentation results: palette label PNGs, probability maps, overlays.

Every writer is atomic: it writes a temporary file next to the target and moves it into place
with :func:`os.replace`, so an interrupted run never leaves a half-written file and never
damages a result that was already there.

    >>> image = read_image("cells.png", channels=1)          # uint8/uint16 HxW
    >>> write_label_png("out/cells_labels.png", labels)      # palette PNG: pixel value = class
    >>> write_png("out/cells_overlay.png", overlay(image, labels))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from unetzoo._atomic import atomic_path

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "atomic_path",
    "overlay",
    "palette",
    "read_image",
    "save_npy",
    "to_rgb8",
    "write_label_png",
    "write_png",
    "write_probability_png",
]

#: file suffixes treated as images when a folder is scanned
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageReadError(OSError):
    """An image file that cannot be decoded or converted; the message names the file."""


# ----------------------------------------------------------------------------- reading
def read_image(path: str | os.PathLike, channels: int | None = None) -> np.ndarray:
    """Read an image file into a numpy array, ``HxW`` (grey) or ``HxWxC``.

    8-bit images come back as uint8, 16-bit grey images as uint16 (their full range is kept),
    float TIFFs as float32. 16-bit colour images come back as uint8: Pillow decodes them to 8 bits
    per channel (the high byte, so the range is scaled, not clipped). Palette images are expanded
    to their colours; alpha is dropped.

    Args:
        path: the image file.
        channels: convert to this many channels: 1 (grey) or 3 (RGB); ``None`` keeps the file's.

    Raises:
        ImageReadError: if the file is missing, not an image, truncated, or cannot be given
            ``channels`` channels.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if stack := stack_problem(im, path):
                raise ImageReadError(stack)
            im.load()
            array = _to_array(upright(im), channels)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"cannot read image {path}: {exc} If the file is trusted, raise PIL.Image.MAX_IMAGE_PIXELS (or set it "
            "to None); `unetzoo predict` lifts the limit"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    if channels is not None and _channels(array) != channels:
        raise ImageReadError(f"cannot convert image {path} ({_channels(array)} channels) to {channels} channels")
    return array


def stack_problem(im: Image.Image, path: str | os.PathLike) -> str | None:
    """Why an opened file is not one image (a multi-page TIFF, whose first page alone is not the
    file), or ``None``. A camera's MPO JPEG holds a preview as a second frame: not refused."""
    pages = getattr(im, "n_frames", 1)
    if im.format == "TIFF" and pages > 1:
        return (f"{path} is a stack of {pages} pages (a multi-page TIFF); unetzoo reads single images: save each "
                "page as its own file (e.g. with tifffile or Fiji) and use those")
    return None


#: the EXIF tag that says how a stored image is turned for display
EXIF_ORIENTATION = 0x0112


def upright(im: Image.Image) -> Image.Image:
    """``im`` as viewers and annotation tools show it: a phone's JPEG is often stored sideways
    with an EXIF orientation saying how to turn it. ``im`` itself where there is none."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(im) if im.getexif().get(EXIF_ORIENTATION, 1) != 1 else im


def _channels(a: np.ndarray) -> int:
    return 1 if a.ndim == 2 else a.shape[2]


def _to_array(im: Image.Image, channels: int | None) -> np.ndarray:
    if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grey (PIL reports some as 32-bit "I")
        a = np.asarray(im)
        a = np.clip(a, 0, 65535).astype(np.uint16) if a.dtype != np.uint16 else a
        return np.repeat(a[..., None], 3, axis=2) if channels == 3 else a
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        return np.repeat(a[..., None], 3, axis=2) if channels == 3 else a
    if channels == 1:
        return np.asarray(im.convert("L"))
    if channels == 3:
        return np.asarray(im.convert("RGB"))
    if channels is None and im.mode in ("LA", "1"):
        return np.asarray(im.convert("L"))
    if channels is None and im.mode not in ("L", "RGB"):
        return np.asarray(im.convert("RGB"))  # palette, CMYK, YCbCr, ...; alpha dropped
    return np.asarray(im)  # e.g. RGBA for a 4-channel model


# ----------------------------------------------------------------------------- colours
def palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``(n, 3)`` uint8, class 0 black, then distinct colours.

    Each class index's bits are spread over the high bits of R, G and B, so neighbouring
    classes get clearly different colours.
    """
    out = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """An ``HxWx3`` uint8 version of any image for display (16-bit and float are rescaled)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros(a.shape, np.uint8) if hi <= lo else np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5, colors: np.ndarray | None = None) -> np.ndarray:
    """The image with every non-background pixel tinted in its class colour.

    Args:
        image: ``HxW`` or ``HxWxC`` image (any dtype; see :func:`to_rgb8`).
        labels: ``HxW`` class indices; class 0 (background) is left untouched.
        alpha: opacity of the class colours.
        colors: ``(n, 3)`` uint8 colours; the VOC :func:`palette` by default.

    Returns:
        ``HxWx3`` uint8.
    """
    rgb = to_rgb8(image)
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {rgb.shape[:2]} differ in size")
    colors = palette(max(256, int(labels.max()) + 1)) if colors is None else np.asarray(colors, np.uint8)
    out = rgb.copy()
    # only the labelled pixels, band by band: a few bytes per pixel on top of the image, where
    # blending whole float32 planes took about 16 (an 8192x8192 overlay needed 3 GB more)
    rows = max(1, (1 << 22) // max(1, labels.shape[1]))
    for top in range(0, labels.shape[0], rows):
        band = labels[top : top + rows]
        where = band > 0
        if where.any():
            pixels = out[top : top + rows]
            mixed = (1.0 - alpha) * pixels[where].astype(np.float32) + alpha * colors[band[where]].astype(np.float32)
            pixels[where] = np.round(mixed).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- writing
def _save(im: Image.Image, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an ``HxW`` or ``HxWx3`` uint8 (or ``HxW`` uint16) array as a PNG, atomically."""
    return _save(Image.fromarray(np.ascontiguousarray(image)), path)


def write_label_png(path: str | os.PathLike, labels: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write class indices as a palette PNG: pixel values are the classes, viewers show colours.

    More than 256 classes do not fit a palette; they are written as 16-bit grey PNGs.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be HxW, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"labels must be in [0, 65535], got [{labels.min()}, {labels.max()}]")
    if labels.size and labels.max() > 255:
        return _save(Image.fromarray(labels.astype(np.uint16)), path)
    im = Image.fromarray(labels.astype(np.uint8))  # mode "L"; putpalette makes it "P", values kept
    colors = palette(256) if colors is None else np.asarray(colors, np.uint8)
    im.putpalette(colors[:256].reshape(-1).tolist())
    return _save(im, path)


def write_probability_png(path: str | os.PathLike, prob: np.ndarray) -> Path:
    """Write a probability map in ``[0, 1]`` as a 16-bit grey PNG (value = round(p * 65535))."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2:
        raise ValueError(f"a probability PNG holds one HxW map, got shape {prob.shape}")
    return _save(Image.fromarray(np.round(np.clip(prob, 0.0, 1.0) * 65535).astype(np.uint16)), path)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``numpy.save`` to ``path``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array))
    return Path(path)
