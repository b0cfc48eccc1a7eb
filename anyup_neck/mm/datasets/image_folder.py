"""Unlabelled image-folder dataset for upsampler training (any tree of JPEG/PNG files).

ImageNet's ``train/<class>/<image>.JPEG`` layout works as is; labels are never read. Problems
that would stop training are reported before it starts: a missing, empty or unreadable folder
and (with ``min_size``) images too small. A file that fails to decode later, mid-run, is
skipped with a warning and the next image is used instead.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from mmseg.registry import DATASETS
from PIL import Image
from tqdm import tqdm

from .transforms import LoadImageRGB, UnreadableImageError

#: File name endings (case-insensitive) taken as images.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def _raise(err: OSError) -> None:
    raise err


def list_images(root: str) -> list[str]:
    """Every JPEG/PNG file under ``root`` (recursively), sorted; errors name ``data_root``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f'data_root: expected a directory of JPEG/PNG images, '
                                f'got {root!r} (no such directory)')
    try:
        paths = [os.path.join(folder, name)
                 for folder, _, names in os.walk(root, onerror=_raise, followlinks=True)
                 for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    except OSError as err:
        raise OSError(f'data_root: cannot read the folder tree under {root!r}: {err}') from err
    if not paths:
        raise ValueError(f'data_root: expected JPEG/PNG files ({", ".join(IMAGE_EXTENSIONS)}) '
                         f'under {root!r}, found none')
    return sorted(paths)


def _probe_readable(paths: Sequence[str], count: int, root: str) -> None:
    """Decode up to ``count`` files spread over ``paths``; raise if none decodes."""
    step = max(1, len(paths) // count)
    errors = []
    for path in paths[::step][:count]:
        try:
            LoadImageRGB()(dict(img_path=path))
            return
        except UnreadableImageError as err:
            errors.append(str(err))
    raise ValueError(f'data_root: expected readable images under {root!r}, but none of the '
                     f'{len(errors)} probed files decodes; first error: {errors[0]}')


def _check_min_size(paths: Sequence[str], min_size: int) -> None:
    """Read every header; raise listing the images whose shorter side is below ``min_size``."""
    small = []
    for path in tqdm(paths, desc='checking image sizes', unit='img', mininterval=2.0,
                     disable=len(paths) < 2000):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # unreadable: skipped with a warning when loaded
            continue
        if min(width, height) < min_size:
            small.append(f'{path} ({width}x{height})')
    if small:
        raise ValueError(f'min_size: expected images whose shorter side is at least {min_size} '
                         f'px, got {len(small)} smaller: {small[:5]}'
                         + (' ...' if len(small) > 5 else '')
                         + '; remove them or lower min_size')


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """All JPEG/PNG images under ``data_root``, through ``pipeline``; no labels.

    Args:
        data_root: folder searched recursively.
        pipeline: transforms (configs or callables), e.g. ``LoadImageRGB``,
            ``ResizeCoverCrop``, ``RandomHorizontalFlip``, ``PackImage``.
        min_size: if > 0, every image's shorter side must be at least this (checked on the
            headers before training; e.g. the crop size, so no image is upscaled beyond it).
        probe: how many files (spread over the list) are decoded up front; the dataset is
            rejected if none of them decodes.
        max_refetch: how many following images are tried in place of an unreadable one.

    Each item is the pipeline's output, e.g. ``dict(inputs=(3, H, W) uint8 tensor)``.
    """

    def __init__(self, data_root: str, pipeline: Sequence = (), min_size: int = 0,
                 probe: int = 8, max_refetch: int = 100, **kwargs) -> None:
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ValueError(f'min_size: expected a non-negative int, got {min_size!r}')
        if isinstance(probe, bool) or not isinstance(probe, int) or probe < 1:
            raise ValueError(f'probe: expected a positive int, got {probe!r}')
        self.min_size, self.probe = min_size, probe
        super().__init__(data_root=data_root, pipeline=list(pipeline),
                         max_refetch=max_refetch, **kwargs)

    def load_data_list(self) -> list[dict]:
        paths = list_images(self.data_root)
        _probe_readable(paths, self.probe, self.data_root)
        if self.min_size:
            _check_min_size(paths, self.min_size)
        return [dict(img_path=path) for path in paths]

    def __getitem__(self, idx: int) -> dict:
        """The pipeline's output for image ``idx``, or, if that file cannot be decoded, for
        the next decodable one (with a warning naming the skipped file)."""
        if not self._fully_initialized:
            self.full_init()
        for attempt in range(self.max_refetch + 1):
            index = (idx + attempt) % len(self)
            try:
                return self.prepare_data(index)
            except UnreadableImageError as err:
                print_log(f'skipping an unreadable image: {err}', logger='current',
                          level=logging.WARNING)
        raise RuntimeError(f'data_root: {self.max_refetch + 1} images in a row from index '
                           f'{idx} could not be decoded under {self.data_root!r}')
