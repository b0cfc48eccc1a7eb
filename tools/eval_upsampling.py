"""Compare feature upsamplers on one backbone and one dataset: fidelity, probe, transfer.

    python tools/eval_upsampling.py --data-root data/ade/ADEChallengeData2016 \
        --backbone vit_small_patch14_dinov2 --backbone-weights dinov2_vits14.pth \
        --image-size 448 --checkpoint anyup=anyup_multi_backbone.pth
    python tools/eval_upsampling.py --data-root data/demo/ade --image-size 128 \
        --backbone vit_tiny_patch16_224 --backbone-kwargs '{"patch_size": 8}' \
        --checkpoint trained=work_dirs/demo_synthetic/anyup_latest.pth --lfu-mode paper

The data root has the ADE20K layout (``images/{training,validation}/*.jpg`` and
``annotations/...png``). Prints a Markdown table; ``--json``/``--markdown`` also save it.
Measures (see anyup_neck/quality/evaluation.py): cosine/MSE of 2x-upsampled half-resolution
features against full-resolution features; mIoU/accuracy of a linear probe on each method's
pixel-resolution features; mIoU of a probe fitted on low-resolution features and applied
unchanged to the upsampled ones.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from _quality_cli import (add_backbone_arguments, add_method_arguments,  # noqa: E402
                          build_backbone, build_methods)

from anyup_neck.quality import UpsamplingBenchmark, format_table, load_ade_split  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', required=True, help='dataset root in the ADE20K layout')
    parser.add_argument('--train-split', default='training')
    parser.add_argument('--val-split', default='validation')
    parser.add_argument('--num-classes', type=int, default=None,
                        help='classes (default: the largest label + 1 in the training split)')
    parser.add_argument('--image-size', type=int, default=224,
                        help='square side after resize and centre crop; a multiple of the '
                        'patch size')
    parser.add_argument('--max-train', type=int, default=None, help='first N training images')
    parser.add_argument('--max-val', type=int, default=None, help='first N validation images')
    parser.add_argument('--pixels-per-image', type=int, default=256)
    parser.add_argument('--probe-steps', type=int, default=300)
    parser.add_argument('--batch-size', type=int, default=8)
    add_backbone_arguments(parser)
    add_method_arguments(parser, default=['nearest', 'bilinear', 'bicubic', 'guided_filter',
                                          'anyup_random'])
    parser.add_argument('--json', help='also write the results as JSON here')
    parser.add_argument('--markdown', help='also write the table as Markdown here')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    backbone, features = build_backbone(args)
    if args.image_size % backbone.patch_size:
        raise ValueError(f'--image-size: expected a multiple of the backbone patch size '
                         f'{backbone.patch_size}, got {args.image_size}')
    methods = build_methods(args)
    train = load_ade_split(args.data_root, args.train_split, args.image_size, args.max_train)
    val = load_ade_split(args.data_root, args.val_split, args.image_size, args.max_val)
    valid = train.labels[train.labels != 255]
    num_classes = args.num_classes or int(valid.max()) + 1
    benchmark = UpsamplingBenchmark(features, train, val, num_classes,
                                    pixels_per_image=args.pixels_per_image,
                                    probe_steps=args.probe_steps, batch_size=args.batch_size,
                                    seed=args.seed)
    results = benchmark.run(methods)
    table = format_table(results)
    print(f'\n{args.backbone}, {len(train.images)} training / {len(val.images)} validation '
          f'images at {args.image_size}px, {num_classes} classes\n\n{table}')
    for path, text in ((args.json, json.dumps(results, indent=1)), (args.markdown, table)):
        if path:
            os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text + '\n')
    return results


if __name__ == '__main__':
    main()
