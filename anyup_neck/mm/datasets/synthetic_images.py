"""Procedurally generated image folders, for the demo config and tests (no download).

The scenes are those of the segmentation demo (:func:`anyup_neck.mm.datasets.procedural.
render_scene`: textured shapes on a textured background), whose sharp edges give the guidance
image information the low-resolution features lack. Files are JPEG and PNG alternately,
written once per seed (existing files are kept) and atomically, so several ranks may generate
at once.
"""
from __future__ import annotations

import os

import numpy as np
from mmseg.registry import DATASETS
from PIL import Image

from .image_folder import ImageFolderDataset
from .procedural import render_scene


def write_synthetic_images(root: str, num_images: int, size: int, seed: int = 0) -> list[str]:
    """Write ``num_images`` square scenes of side ``size`` under ``root`` (image i from seed
    (seed, i)); return their paths."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f'num_images: expected a positive int, got {num_images!r}')
    os.makedirs(root, exist_ok=True)
    paths = []
    for i in range(num_images):
        extension = 'png' if i % 2 else 'jpg'
        path = os.path.join(root, f'scene_seed{seed}_{size}px_{i:05d}.{extension}')
        if not os.path.exists(path):
            temporary = f'{path}.{os.getpid()}.tmp'
            image = Image.fromarray(render_scene(np.random.default_rng([seed, i]), size)[0])
            image.save(temporary, format='PNG' if i % 2 else 'JPEG', quality=95)
            os.replace(temporary, path)
        paths.append(path)
    return paths


@DATASETS.register_module()
class SyntheticImageFolder(ImageFolderDataset):
    """An :class:`ImageFolderDataset` over ``num_images`` scenes it generates in ``data_root``.

    Args:
        data_root: where the images are written (and then read from, like any image folder).
        num_images: how many scenes.
        image_size: their side in pixels (square scenes).
        seed: scene seed; train and validation folders should use different seeds.
        **kwargs: :class:`ImageFolderDataset` arguments (``pipeline``, ``min_size``, ...).
    """

    def __init__(self, data_root: str, num_images: int, image_size: int, seed: int = 0,
                 **kwargs) -> None:
        write_synthetic_images(data_root, num_images, image_size, seed)
        super().__init__(data_root=data_root, **kwargs)
