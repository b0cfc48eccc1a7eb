"""Upsampling quality evaluation: one run compares several upsamplers on three measures.

For a frozen backbone and a segmentation dataset in the ADE20K on-disk layout:

* **feature fidelity**: the backbone's features of an image at half resolution are upsampled
  2x and compared (cosine, MSE) with its features of the full-resolution image, which are the
  known high-resolution target;
* **linear probe**: a 1x1 classifier trained on each method's pixel-resolution features of
  the training split, scored (mIoU, pixel accuracy) on the validation split;
* **feature-space preservation** (AnyUp paper, Tab. 5): one classifier trained on the
  *low-resolution* features, applied unchanged to each method's upsampled features.

Torch only: the backbone and the methods come in as callables, so the same code serves the
generated demo data and real datasets.
"""
from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..upsampler.normalization import imagenet_normalise
from .metrics import confusion_matrix, feature_fidelity, segmentation_scores
from .probe import fit_linear_probe, predict_map

#: (B, 3, H, W) RGB in [0, 1] -> (B, C, h, w) features (the backbone applies its own normalisation).
FeatureFn = Callable[[torch.Tensor], torch.Tensor]
#: (guidance (B, 3, H, W) ImageNet-normalised, features (B, C, h, w), (H', W')) -> (B, C, H', W').
Method = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]

IGNORE_INDEX = 255


@dataclass
class Split:
    """Images (N, 3, S, S) in [0, 1] and labels (N, S, S), 255 = ignore."""
    images: torch.Tensor
    labels: torch.Tensor


def load_ade_split(root: str, split: str, size: int, max_images: int | None = None) -> Split:
    """Read ``root/images/<split>/*.jpg`` and ``root/annotations/<split>/*.png``.

    ADE20K conventions: annotation 0 is unlabelled (-> 255), class k is stored as k + 1.
    Each image is resized on its short side and centre-cropped to ``size`` x ``size``.
    """
    paths = sorted(glob.glob(os.path.join(root, 'images', split, '*.jpg')))[:max_images]
    if not paths:
        raise FileNotFoundError(f'data_root: expected images under '
                                f'{os.path.join(root, "images", split)}/*.jpg, found none')
    images, labels = [], []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        annotation = os.path.join(root, 'annotations', split, stem + '.png')
        if not os.path.isfile(annotation):
            raise FileNotFoundError(f'data_root: expected the annotation {annotation} for {path}')
        with Image.open(path) as image, Image.open(annotation) as label:
            images.append(_square(image.convert('RGB'), size, Image.BILINEAR))
            labels.append(_square(label, size, Image.NEAREST))
    image_array = np.stack([np.asarray(i, dtype=np.float32) / 255 for i in images])
    label_array = np.stack([np.asarray(lab, dtype=np.int64) for lab in labels])
    label_array = np.where(label_array == 0, IGNORE_INDEX + 1, label_array) - 1
    return Split(torch.from_numpy(image_array).permute(0, 3, 1, 2).contiguous(),
                 torch.from_numpy(label_array))


def _square(picture: Image.Image, size: int, resample: int) -> Image.Image:
    scale = size / min(picture.size)
    w, h = max(size, round(picture.width * scale)), max(size, round(picture.height * scale))
    picture = picture.resize((w, h), resample)
    left, top = (w - size) // 2, (h - size) // 2
    return picture.crop((left, top, left + size, top + size))


def _batches(count: int, batch_size: int):
    return [slice(i, min(count, i + batch_size)) for i in range(0, count, batch_size)]


class UpsamplingBenchmark:
    """Runs every method over the same data, features and probes (see module docstring).

    Args:
        backbone: features of RGB images in [0, 1].
        train, val: the dataset splits.
        num_classes: classes of the labels (255 ignored).
        pixels_per_image: training pixels sampled per image for the probes.
        probe_steps: optimisation steps of each probe.
        batch_size: images per forward.
    """

    def __init__(self, backbone: FeatureFn, train: Split, val: Split, num_classes: int,
                 pixels_per_image: int = 256, probe_steps: int = 300, batch_size: int = 8,
                 seed: int = 0) -> None:
        self.backbone, self.train, self.val = backbone, train, val
        self.num_classes = num_classes
        self.pixels_per_image = pixels_per_image
        self.probe_steps = probe_steps
        self.batch_size = batch_size
        self.seed = seed

    # -- backbone features, computed once and shared by every method --------------------------
    def _features_of(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.backbone(images[batch])
                              for batch in _batches(len(images), self.batch_size)])

    @functools.cached_property
    def train_features(self) -> torch.Tensor:
        """(N, C, h, w) backbone features of the training images."""
        return self._features_of(self.train.images)

    @functools.cached_property
    def val_features(self) -> torch.Tensor:
        """(N, C, h, w) backbone features of the validation images (fidelity target too)."""
        return self._features_of(self.val.images)

    @functools.cached_property
    def val_half_features(self) -> torch.Tensor:
        """(N, C, h/2, w/2) features of the validation images at half resolution."""
        half = F.interpolate(self.val.images, scale_factor=0.5, mode='bilinear', antialias=True,
                             align_corners=False)
        return self._features_of(half)

    def _upsampled(self, method: Method, split: Split, features: torch.Tensor,
                   batch: slice) -> torch.Tensor:
        """Pixel-resolution features of ``split.images[batch]`` with ``method``."""
        images = split.images[batch]
        return method(imagenet_normalise(images), features[batch], tuple(images.shape[-2:]))

    # -- probes ------------------------------------------------------------------------------
    def _sample_pixels(self, maps: torch.Tensor, labels: torch.Tensor, generator) -> tuple:
        """Up to ``pixels_per_image`` labelled pixels per image -> (N, C), (N,)."""
        xs, ys = [], []
        for features, label in zip(maps, labels):
            valid = (label.flatten() != IGNORE_INDEX).nonzero().squeeze(1)
            pick = valid[torch.randperm(valid.numel(), generator=generator)[:self.pixels_per_image]]
            xs.append(features.flatten(1)[:, pick].t())
            ys.append(label.flatten()[pick])
        return torch.cat(xs), torch.cat(ys)

    def _fit_probe(self, maps_of: Callable[[slice], torch.Tensor],
                   labels: torch.Tensor) -> torch.nn.Linear:
        """Probe on the training split; ``maps_of(batch)`` gives maps the size of ``labels``."""
        generator = torch.Generator().manual_seed(self.seed)
        xs, ys = [], []
        for batch in _batches(len(self.train.images), self.batch_size):
            x, y = self._sample_pixels(maps_of(batch), labels[batch], generator)
            xs.append(x)
            ys.append(y)
        return fit_linear_probe(torch.cat(xs), torch.cat(ys), self.num_classes,
                                steps=self.probe_steps, seed=self.seed)

    @functools.cached_property
    def low_res_probe(self) -> torch.nn.Linear:
        """Probe on the backbone's own grid (labels sampled at the cells' centres)."""
        grid = self.train_features.shape[-2:]
        labels = F.interpolate(self.train.labels[:, None].float(), size=grid, mode='nearest')
        return self._fit_probe(lambda batch: self.train_features[batch], labels[:, 0].long())

    # -- one method -------------------------------------------------------------------------
    def fidelity(self, method: Method) -> dict[str, float]:
        """2x upsampling of half-resolution features vs the full-resolution features."""
        totals = dict(cosine=0.0, mse=0.0)
        for batch in _batches(len(self.val.images), self.batch_size):
            target = self.val_features[batch]
            pred = method(imagenet_normalise(self.val.images[batch]),
                          self.val_half_features[batch], tuple(target.shape[-2:]))
            for key, value in feature_fidelity(pred, target).items():
                totals[key] += value * target.shape[0]
        return {key: value / len(self.val.images) for key, value in totals.items()}

    def segmentation(self, method: Method) -> dict[str, float]:
        """Probe mIoU/aAcc of the method's features, and the low-resolution probe's mIoU."""
        probe = self._fit_probe(
            lambda batch: self._upsampled(method, self.train, self.train_features, batch),
            self.train.labels)
        own = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        transfer = torch.zeros_like(own)
        for batch in _batches(len(self.val.images), self.batch_size):
            maps = self._upsampled(method, self.val, self.val_features, batch)
            labels = self.val.labels[batch]
            own += confusion_matrix(predict_map(probe, maps), labels, self.num_classes)
            transfer += confusion_matrix(predict_map(self.low_res_probe, maps), labels,
                                         self.num_classes)
        scores = segmentation_scores(own)
        return dict(probe_mIoU=scores['mIoU'], probe_aAcc=scores['aAcc'],
                    lowres_probe_mIoU=segmentation_scores(transfer)['mIoU'])

    def run(self, methods: dict[str, Method]) -> dict[str, dict[str, float]]:
        """All measures for every method, in the given order."""
        results = {}
        with torch.no_grad():
            for name in tqdm(methods, desc='methods', unit='method'):
                results[name] = {**self.fidelity(methods[name]), **self.segmentation(methods[name])}
        return results


COLUMNS: Sequence[tuple[str, str]] = (
    ('cosine', 'cos sim (up)'), ('mse', 'MSE (down)'), ('probe_mIoU', 'probe mIoU'),
    ('probe_aAcc', 'probe aAcc'), ('lowres_probe_mIoU', 'low-res probe mIoU'))


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table, one row per method."""
    lines = ['| method | ' + ' | '.join(title for _, title in COLUMNS) + ' |',
             '|---|' + '---:|' * len(COLUMNS)]
    for name, row in results.items():
        cells = [f'{row[key]:.4f}' if key in ('cosine', 'mse') else f'{row[key]:.2f}'
                 for key, _ in COLUMNS]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
