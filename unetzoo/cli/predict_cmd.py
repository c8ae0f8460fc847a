"""``unetzoo predict MODEL INPUTS... --out DIR``: segment image files or folders of any size.

For every image ``<name>.<ext>`` it writes, next to each other under ``DIR`` (folder inputs keep
their sub-folders):

* ``<name>_labels.png``: palette PNG whose pixel values are the class indices;
* ``<name>_overlay.png``: the image with each class tinted in its palette colour;
* with ``--probs``: ``<name>_prob.png`` (16-bit PNG of the foreground probability, 1-2 classes)
  or ``<name>_probs.npy`` (float16 ``CxHxW`` probabilities, more classes).

Every file is written atomically. An image that cannot be read or segmented is reported by
name and skipped; the exit status is 1 if any was, and everything written before stays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from unetzoo.cli.options import dtype_name, fraction, non_negative_int, positive_int

EPILOG = """examples:
  unetzoo predict runs/cells/best slides/ --out masks/ --tile 512 --probs
  unetzoo predict unet-classic scan.png --checkpoint milesial.pth --out out/ --tta
  unetzoo predict org/unet-cells photo.jpg --out out/        (a Hub id)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images or folders of images of any size (tiled)",
        description="Segment images with a trained model, tile by tile (memory bounded by the tile).\n"
        "MODEL is a saved model directory, a Hub id (org/name) or a registry name together with --checkpoint.\n"
        "Writes <name>_labels.png (palette), <name>_overlay.png and, with --probs, <name>_prob.png (16-bit)\n"
        "or <name>_probs.npy (more than 2 classes) under --out; unreadable images are skipped (exit 1).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="saved model directory, Hub id, or registry name (with --checkpoint)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", "-o", required=True, type=Path, help="output folder (created if needed)")
    p.add_argument("--checkpoint", type=Path, help="whole-model checkpoint for a registry name (any supported format)")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit) when MODEL is a Hub id")
    p.add_argument("--tile", type=positive_int, help="tile size in pixels (default: 512, or 572 for unet-original)")
    p.add_argument("--overlap", type=non_negative_int, help="overlap of neighbouring tiles (default: tile/4; padded networks)")
    p.add_argument("--batch-size", type=positive_int, default=2, help="tiles per forward pass (default: 2)")
    p.add_argument("--probs", action="store_true", help="also write probability maps")
    p.add_argument("--tta", action="store_true", help="average over flips (4x slower)")
    p.add_argument("--no-overlay", dest="overlay", action="store_false", help="do not write overlay PNGs")
    p.add_argument("--alpha", type=fraction, default=0.5, help="opacity of the class colours in overlays (default: 0.5)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cuda if available, else cpu)")
    p.add_argument("--dtype", "--precision", type=dtype_name, metavar="{float32,bfloat16,float16}",
                   help="autocast dtype (default: float32); the training config's names (fp32, bf16, fp16) work too")
    p.add_argument("--fast", action="store_true",
                   help="run the model through unetzoo.optimize_for_inference first (BN folding, channels-last, "
                        "--dtype or else bfloat16 where the hardware is fast at it, fused oneDNN kernels on CPU); "
                        "4x faster than bf16 autocast for unet-resnet50 tiles on a 2-core AMX CPU")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- inputs
#: what predict writes next to each stem; such files are outputs, not inputs
OUTPUT_SUFFIXES = ("_labels.png", "_overlay.png", "_prob.png", "_probs.npy")


def _hidden(rel: Path) -> bool:
    """Hidden files and folders (``.x.png``, macOS's ``._x.png`` and ``__MACOSX/``) are not images."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def collect_images(inputs: list[str], exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Image files named or found under ``inputs``, each with its output stem (relative path).

    Returns:
        ``(path, stem)`` pairs, and the inputs that do not exist. In a folder, hidden files and
        folders are skipped, and so is the output folder ``exclude`` where it lies inside; where
        the folder is the output folder or lies inside it, files named like predict's outputs
        (``*_labels.png``, ...) are skipped instead. Stems that clash (``a.png`` and ``a.jpg``)
        keep their suffix; a stem is never given to two files.
    """
    from unetzoo.io import IMAGE_EXTENSIONS

    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    skip = exclude.resolve() if exclude is not None else None
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            root = path.resolve()
            nested = skip is not None and root in skip.parents  # the output folder lies inside this one
            within = skip is not None and (skip == root or skip in root.parents)  # this one is (in) it
            for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
                rel = f.relative_to(path)
                if _hidden(rel) or (nested and skip in f.resolve().parents) or \
                        (within and f.name.endswith(OUTPUT_SUFFIXES)):  # an earlier run's output
                    continue
                found.append((f, rel))
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            missing.append(item)
    first: dict[tuple[Path, Path], tuple[Path, Path]] = {}
    for p, rel in found:  # a file named twice is segmented once
        first.setdefault((p.resolve(), rel), (p, rel))
    # in path order, not argument order: a/x.png and b/x.png get x_png and x_png_2 however named
    found = sorted(first.values(), key=lambda pr: (str(pr[1]), str(pr[0].resolve())))
    stems = [rel.with_suffix("") for _, rel in found]
    clash = {s for s in stems if stems.count(s) > 1}
    wanted = [rel.with_name(f"{rel.stem}_{rel.suffix[1:]}") if stem in clash else stem
              for (_, rel), stem in zip(found, stems)]
    # files keeping their own name first, so that a renamed one (x.png as x_png, beside x.jpg)
    # never takes the name another file (x_png.png) has by right; then x_png_2, x_png_3, ...
    order = sorted(range(len(found)), key=lambda i: wanted[i] != stems[i])
    taken: set[Path] = set()
    named: dict[int, Path] = {}
    for i in order:
        unique, n = wanted[i], 1
        while unique in taken:
            n += 1
            unique = wanted[i].with_name(f"{wanted[i].name}_{n}")
        taken.add(unique)
        named[i] = unique
    pairs = [(found[i][0], named[i]) for i in range(len(found))]
    return pairs, missing


def _output(base: Path, suffix: str) -> Path:
    """``base`` (output folder / stem) with one of :data:`OUTPUT_SUFFIXES`."""
    return base.with_name(base.name + suffix)


def output_paths(out: Path, stem: Path, *, overlay: bool, probs: bool) -> list[Path]:
    """Every file predict may write for ``stem`` (the probabilities' name depends on the classes)."""
    wanted = {"_labels.png": True, "_overlay.png": overlay, "_prob.png": probs, "_probs.npy": probs}
    return [_output(out / stem, suffix) for suffix in OUTPUT_SUFFIXES if wanted[suffix]]


# ----------------------------------------------------------------------------- the model
def load_model(source: str, checkpoint: Path | None = None, revision: str | None = None) -> Any:
    """A model from a saved directory, a registry name (+ checkpoint) or a Hub id.

    Raises:
        ValueError: when ``source`` is none of those, or the combination makes no sense.
    """
    import unetzoo
    from unetzoo.registry import UnknownModelError, get_spec

    if Path(source).is_dir():
        if checkpoint is not None:
            raise ValueError(f"{source} is a saved model directory; --checkpoint only goes with a registry name")
        return unetzoo.from_pretrained(source)
    if "/" not in source:
        get_spec(source)  # raises UnknownModelError with suggestions
        if checkpoint is None:
            print(
                f"warning: {source} without --checkpoint has an untrained decoder; its predictions are meaningless",
                file=sys.stderr,
            )
            return unetzoo.create(source)
        return unetzoo.create(source, checkpoint=checkpoint)
    if checkpoint is not None:
        raise ValueError(f"--checkpoint goes with a registry name such as unet-classic, not with {source!r}")
    try:
        return unetzoo.from_pretrained(source, revision=revision)
    except UnknownModelError:
        raise
    except Exception as exc:
        raise ValueError(f"cannot load {source!r}: it is not a directory here, and as a Hub id: {exc}") from exc


# ----------------------------------------------------------------------------- one image
def _write_outputs(args: argparse.Namespace, image, probs, base: Path) -> None:
    import numpy as np
    import torch

    from unetzoo import io
    from unetzoo._atomic import atomic_paths
    from unetzoo.inference import scores_to_labels

    labels = scores_to_labels(torch.from_numpy(probs)).numpy()
    writers = {"_labels.png": lambda path: io.write_label_png(path, labels)}
    if args.overlay:
        writers["_overlay.png"] = lambda path: io.write_png(path, io.overlay(image, labels, alpha=args.alpha))
    if args.probs:
        if probs.shape[0] <= 2:
            writers["_prob.png"] = lambda path: io.write_probability_png(path, probs[-1])
        else:
            writers["_probs.npy"] = lambda path: io.save_npy(path, probs.astype(np.float16))
    # one image's files together: a failure part-way leaves an earlier run's set whole, never this
    # model's labels beside another's overlay
    with atomic_paths([_output(base, suffix) for suffix in writers]) as tmps:
        for write, tmp in zip(writers.values(), tmps):
            write(tmp)
    if args.probs:  # the other probability format, from an earlier model with another number of classes
        other = "_probs.npy" if "_prob.png" in writers else "_prob.png"
        _output(base, other).unlink(missing_ok=True)


def _segment(args: argparse.Namespace, model, path: Path, stem: Path, single: bool) -> None:
    import torch

    from unetzoo import io
    from unetzoo.inference import predict

    image = io.read_image(path, channels=model.in_chans)
    pixels = image
    if image.dtype.kind == "f":  # float TIFFs hold intensities in [0, 1], as training reads them: normalise
        import numpy as np

        from unetzoo.inference.source import normalization_for

        mean, std = (np.asarray(v, np.float32) for v in normalization_for(model))
        pixels = (image - mean) / std if image.ndim == 3 else (image - mean.mean()) / std.mean()
    dtype = getattr(torch, args.dtype) if args.dtype and not args.fast else None  # fast: weights already cast
    probs = predict(
        model,
        pixels,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        output="probs",
        tta=args.tta,
        dtype=dtype,
        progress=single,
    )
    _write_outputs(args, image, probs, args.out / stem)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from unetzoo.inference.predict import plan_tiles
    from unetzoo.io import ImageReadError

    images, failed = collect_images(args.inputs, exclude=args.out)
    for item in failed:
        print(f"unetzoo predict: error: input {item} does not exist", file=sys.stderr)
    if not images:
        found_none_in = [item for item in args.inputs if item not in failed]  # the missing ones are reported
        if found_none_in:
            print("unetzoo predict: error: no images found in " + ", ".join(found_none_in), file=sys.stderr)
        return 2
    sources = {p.resolve() for p, _ in images}
    for path, stem in images:  # checked before any work: an output never replaces an input
        for target in output_paths(args.out, stem, overlay=args.overlay, probs=args.probs):
            if target.resolve() in sources:
                print(f"unetzoo predict: error: the output {target} (for {path}) would replace an input of this run; "
                      "write into another folder with --out", file=sys.stderr)
                return 2
    # Pillow refuses images over 179 megapixels as possible decompression bombs; here the user
    # names the files, and tiling keeps memory bounded (a whole-slide scan is a normal input)
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        model = load_model(args.model, args.checkpoint, args.revision)
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
        plan_tiles(model, 64, 64, tile=args.tile, overlap=args.overlap)  # a bad tile/overlap: said once, here
        model.to(device).eval()
        if args.fast:
            from unetzoo.fast import optimize_for_inference

            model = optimize_for_inference(model, dtype=args.dtype or "auto")
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, AssertionError) as exc:  # CUDA absent: both
        print(f"unetzoo predict: error: {exc}", file=sys.stderr)
        return 2
    done = 0
    for path, stem in tqdm(images, unit="image", desc="predict", disable=len(images) == 1):
        try:
            _segment(args, model, path, stem, single=len(images) == 1)
            done += 1
        except ImageReadError as exc:
            tqdm.write(f"unetzoo predict: error: {exc} (skipped)", file=sys.stderr)
            failed.append(str(path))
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:  # a write that fails too: the next image
            tqdm.write(f"unetzoo predict: error: could not segment {path}: {exc}", file=sys.stderr)
            failed.append(str(path))
    print(f"segmented {done} image(s) into {args.out}")
    if failed:
        print(f"{len(failed)} input(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
