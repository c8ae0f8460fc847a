"""Inference on images of any size: overlap-tile (valid convolutions) and blended tiles.

    >>> import unetzoo
    >>> model = unetzoo.create("unet-resnet18", num_classes=2)
    >>> labels = unetzoo.predict(model, big_uint8_image, tile=512, output="labels", progress=True)

See :func:`predict` for the input conventions and :mod:`unetzoo.inference.tiling` for the
tile geometry.
"""

from unetzoo.inference.predict import DEFAULT_TILE, DEFAULT_VALID_TILE, plan_tiles, predict
from unetzoo.inference.stitch import scores_to_labels

__all__ = ["predict", "plan_tiles", "scores_to_labels", "DEFAULT_TILE", "DEFAULT_VALID_TILE"]
