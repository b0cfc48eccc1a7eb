"""The procedural demo scenes as an mmseg dataset (ADE20K layout and conventions)."""
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .procedural import CLASSES, PALETTE


@DATASETS.register_module()
class ShapesDataset(ADE20KDataset):
    """ADE20K's loader (``.jpg``/``.png``, ``reduce_zero_label=True``) with the demo classes.

    ``data_root`` holds ``images/{training,validation}`` and ``annotations/...`` as written by
    ``tools/generate_demo_data.py``; any ADE20K pipeline works unchanged.
    """

    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])
