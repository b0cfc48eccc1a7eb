"""Pictures of what each upsampler does to a backbone's features.

    python tools/visualize.py --image photo.jpg --backbone vit_small_patch14_dinov2 \
        --backbone-weights dinov2_vits14.pth --image-size 448 \
        --checkpoint anyup=anyup_multi_backbone.pth --attention-pixel 200 150 --out-dir vis/
    python tools/visualize.py            # a generated scene, a random ViT, random AnyUp

Writes ``<out-dir>/<image stem>_features.png``: the input, then the joint PCA (first three
components fitted over all maps, so colours are comparable) of the low-resolution features
and of every method's upsampled features; with ``--attention-pixel ROW COL``, also
``<stem>_attention.png``: the weights with which each AnyUp model averages the features for
that output pixel, over the image, the pixel marked.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from _quality_cli import (add_backbone_arguments, add_method_arguments,  # noqa: E402
                          build_backbone, build_methods)

from anyup_neck import AnyUp  # noqa: E402
from anyup_neck.mm.datasets import render_scene  # noqa: E402
from anyup_neck.upsampler import imagenet_normalise  # noqa: E402
from anyup_neck.visualization import pca_rgb, save_panel, to_pil  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--image', help='RGB image file (default: a generated scene)')
    parser.add_argument('--image-size', type=int, default=224,
                        help='square side the image is resized to; a multiple of the patch size')
    parser.add_argument('--attention-pixel', type=int, nargs=2, metavar=('ROW', 'COL'),
                        help='also draw the attention weights of this output pixel')
    parser.add_argument('--out-dir', default='work_dirs/visualize')
    add_backbone_arguments(parser)
    add_method_arguments(parser, default=['bilinear', 'guided_filter', 'anyup_random'])
    return parser.parse_args(argv)


def load_image(path: str | None, size: int, seed: int) -> tuple[torch.Tensor, str]:
    """(1, 3, size, size) RGB in [0, 1] and a name for the output files."""
    if path is None:
        pixels = render_scene(np.random.default_rng(seed), size)[0]
        name = f'scene_{seed}'
    else:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert('RGB').resize((size, size), Image.BICUBIC))
        name = osp.splitext(osp.basename(path))[0]
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255, name


def attention_tiles(models: dict[str, AnyUp], guidance: torch.Tensor, features: torch.Tensor,
                    pixel: tuple[int, int], picture: Image.Image) -> list[tuple[str, Image.Image]]:
    """One tile per AnyUp model: its weights for ``pixel`` over the image, as a heat map."""
    size = tuple(guidance.shape[-2:])
    tiles = []
    for name, model in models.items():
        weights = model.attention_map(guidance, features, size, pixel)[0]
        heat = F.interpolate(weights[None, None] / weights.max(), size=size, mode='nearest')[0, 0]
        overlay = np.asarray(picture, dtype=np.float32) * 0.4
        overlay[..., 0] += 153 * heat.numpy()
        tile = Image.fromarray(overlay.clip(0, 255).astype(np.uint8))
        row, col = pixel
        ImageDraw.Draw(tile).ellipse((col - 3, row - 3, col + 3, row + 3), outline='yellow')
        tiles.append((f'{name} @ {pixel}', tile))
    return tiles


def main(argv: list[str] | None = None) -> list[str]:
    """Write the PNGs; return their paths."""
    args = parse_args(argv)
    backbone, features_of = build_backbone(args)
    if args.image_size % backbone.patch_size:
        raise ValueError(f'--image-size: expected a multiple of the backbone patch size '
                         f'{backbone.patch_size}, got {args.image_size}')
    image, name = load_image(args.image, args.image_size, args.seed)
    methods = build_methods(args)
    guidance = imagenet_normalise(image)
    size = (args.image_size, args.image_size)
    with torch.no_grad():
        low = features_of(image)
        outputs = {method: fn(guidance, low, size)[0] for method, fn in methods.items()}
    colours = pca_rgb([low[0], *outputs.values()])
    picture = to_pil(image[0])
    tiles = [('image', picture), (f'features {low.shape[-2]}x{low.shape[-1]}',
                                  to_pil(colours[0], size))]
    tiles += [(method, to_pil(rgb)) for method, rgb in zip(outputs, colours[1:])]
    os.makedirs(args.out_dir, exist_ok=True)
    written = [osp.join(args.out_dir, f'{name}_features.png')]
    save_panel(tiles, written[0])
    if args.attention_pixel:
        models = {method: model for method, model in methods.items()
                  if isinstance(model, AnyUp)}
        if not models:
            raise ValueError('--attention-pixel: expected at least one AnyUp method '
                             '(anyup_random or --checkpoint), got none')
        with torch.no_grad():
            tiles = attention_tiles(models, guidance, low, tuple(args.attention_pixel), picture)
        written.append(osp.join(args.out_dir, f'{name}_attention.png'))
        save_panel([('image', picture), *tiles], written[-1])
    for path in written:
        print(f'wrote {path}')
    return written


if __name__ == '__main__':
    main()
