"""Procedural scenes of textured shapes, written in the on-disk layouts of ADE20K and NYUv2.

Each scene: a textured background plane receding in depth, and a few shapes (disc, square,
triangle, ring), each class with its own texture (stripes, checks, dots, grid) in random colours,
painted far to near. Per pixel it gives a class label (what is visible) and a depth in metres.
So a segmentation model must read texture and shape, and sharp boundaries reward image-guided
upsampling. Pure numpy + Pillow: the same seed gives the same files everywhere.

Layouts written by :func:`write_demo_datasets` under ``root``::

    ade/images/{training,validation}/shapes_00000.jpg      RGB
    ade/annotations/{training,validation}/shapes_00000.png uint8, 0 = unlabelled, 1.. = class
    nyu/images/{train,test}/shapes_00000.jpg               RGB (the same scenes)
    nyu/annotations/{train,test}/shapes_00000.png          uint16 depth in millimetres
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import numpy as np
from PIL import Image

#: Class names; ADE-style annotation value = index + 1 (0 = unlabelled).
CLASSES = ('background', 'disc', 'square', 'triangle', 'ring')
PALETTE = ((40, 40, 40), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200))
MAX_DEPTH_M = 10.0

Grid = tuple[np.ndarray, np.ndarray]


def _stripes(y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 9)
    return np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period) > 0


def _checks(y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cell = rng.uniform(4, 8)
    return (np.floor(y / cell) + np.floor(x / cell)) % 2 == 0


def _dots(y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cell = rng.uniform(5, 9)
    return (np.mod(y, cell) - cell / 2) ** 2 + (np.mod(x, cell) - cell / 2) ** 2 < (cell / 3.5) ** 2


def _grid(y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cell = rng.uniform(5, 9)
    return (np.mod(y, cell) < 1.5) | (np.mod(x, cell) < 1.5)


def _disc(grid: Grid, cy: float, cx: float, r: float, rng: np.random.Generator) -> np.ndarray:
    y, x = grid
    return (y - cy) ** 2 + (x - cx) ** 2 < r ** 2


def _square(grid: Grid, cy: float, cx: float, r: float, rng: np.random.Generator) -> np.ndarray:
    y, x = grid
    a = rng.uniform(0, np.pi / 2)
    u, v = (x - cx) * np.cos(a) + (y - cy) * np.sin(a), -(x - cx) * np.sin(a) + (y - cy) * np.cos(a)
    return (np.abs(u) < r * 0.8) & (np.abs(v) < r * 0.8)


def _triangle(grid: Grid, cy: float, cx: float, r: float, rng: np.random.Generator) -> np.ndarray:
    y, x = grid
    a0 = rng.uniform(0, 2 * np.pi)
    corners = [(cy + r * np.sin(a0 + k * 2 * np.pi / 3), cx + r * np.cos(a0 + k * 2 * np.pi / 3))
               for k in range(3)]
    inside = np.ones_like(y, dtype=bool)
    for (y0, x0), (y1, x1) in zip(corners, corners[1:] + corners[:1]):
        inside &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0
    return inside


def _ring(grid: Grid, cy: float, cx: float, r: float, rng: np.random.Generator) -> np.ndarray:
    y, x = grid
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    return (d2 < r ** 2) & (d2 > (r * 0.55) ** 2)


#: class index (1..) -> (mask function, texture function)
SHAPES: dict[int, tuple[Callable, Callable]] = {
    1: (_disc, _stripes), 2: (_square, _checks), 3: (_triangle, _dots), 4: (_ring, _grid)}


def render_scene(rng: np.random.Generator, size: int,
                 max_shapes: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene -> (image (size, size, 3) uint8 RGB, label (size, size) uint8 ADE-style
    (class index + 1), depth (size, size) float32 metres)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    colours = rng.integers(0, 256, size=(2, 3))
    background = _stripes(y, x, rng) if rng.random() < 0.5 else rng.random((size, size)) < 0.5
    image = np.where(background[..., None], colours[0], colours[1]).astype(np.float32)
    image = 0.6 * image + 0.4 * rng.integers(0, 256, size=3)  # low-contrast background
    label = np.ones((size, size), np.uint8)
    depth = (MAX_DEPTH_M * 0.8 - (y / size) * MAX_DEPTH_M * 0.4).astype(np.float32)
    shapes = [(int(rng.integers(1, len(CLASSES))), float(rng.uniform(1.0, 5.0)))
              for _ in range(int(rng.integers(1, max_shapes + 1)))]
    for cls, distance in sorted(shapes, key=lambda s: -s[1]):  # far to near
        mask_fn, texture_fn = SHAPES[cls]
        radius = rng.uniform(0.12, 0.3) * size
        cy, cx = rng.uniform(radius * 0.5, size - radius * 0.5, size=2)
        mask = mask_fn((y, x), cy, cx, radius, rng)
        pattern = texture_fn(y, x, rng)
        shape_colours = rng.integers(0, 256, size=(2, 3))
        texture = np.where(pattern[..., None], shape_colours[0], shape_colours[1])
        image[mask] = texture[mask]
        label[mask] = cls + 1
        depth[mask] = distance + 0.1 * (y[mask] - cy) / size  # slightly tilted surface
    noise = rng.normal(0, 6, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), label, depth


def _write_split(root: str, ade_split: str, nyu_split: str, count: int, size: int,
                 rng: np.random.Generator) -> None:
    dirs = {name: os.path.join(root, *parts) for name, parts in {
        'ade_img': ('ade', 'images', ade_split), 'ade_ann': ('ade', 'annotations', ade_split),
        'nyu_img': ('nyu', 'images', nyu_split), 'nyu_ann': ('nyu', 'annotations', nyu_split),
    }.items()}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    for i in range(count):
        image, label, depth = render_scene(rng, size)
        name = f'shapes_{i:05d}'
        Image.fromarray(image).save(os.path.join(dirs['ade_img'], name + '.jpg'), quality=95)
        Image.fromarray(image).save(os.path.join(dirs['nyu_img'], name + '.jpg'), quality=95)
        Image.fromarray(label).save(os.path.join(dirs['ade_ann'], name + '.png'))
        millimetres = np.round(depth * 1000).astype(np.uint16)
        Image.fromarray(millimetres).save(os.path.join(dirs['nyu_ann'], name + '.png'))


def write_demo_datasets(root: str, num_train: int = 200, num_val: int = 40, size: int = 64,
                        seed: int = 0, log: Callable[[str], None] = print) -> bool:
    """Write both layouts under ``root``; skipped when ``root`` already holds this exact set.

    A different set written earlier by this function (``root/dataset.json``) is replaced.
    Returns True if files were written, False if an identical set was already there.
    """
    if min(num_train, num_val) < 1 or size < 16:
        raise ValueError(f'num_train/num_val: expected >= 1 and size >= 16, got '
                         f'num_train={num_train}, num_val={num_val}, size={size}')
    spec = dict(num_train=num_train, num_val=num_val, size=size, seed=seed, classes=CLASSES)
    stamp = os.path.join(root, 'dataset.json')
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == json.loads(json.dumps(spec)):
                log(f'demo data: {root} already holds {spec}; not regenerating')
                return False
        os.remove(stamp)
        for layout in ('ade', 'nyu'):
            shutil.rmtree(os.path.join(root, layout), ignore_errors=True)
    rng = np.random.default_rng(seed)
    log(f'demo data: writing {num_train} training and {num_val} validation scenes '
        f'({size}x{size}) to {root}')
    _write_split(root, 'training', 'train', num_train, size, rng)
    _write_split(root, 'validation', 'test', num_val, size, rng)
    with open(stamp, 'w') as f:
        json.dump(spec, f, indent=1)
    return True
