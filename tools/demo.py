"""``make demo``: the whole story on generated data, in a few minutes of CPU, no downloads.

    python tools/demo.py [--data-root data/demo] [--work-dir work_dirs/demo]
        [--num-train 200] [--num-val 40] [--size 64] [--upsampler-iters 300]
        [--cfg-options k=v ...]      (options of the segmentation run, step 6)

1. data:      procedural scenes of textured shapes, in the ADE20K and NYUv2 layouts (once;
              a second set at the upsampler's training resolution for step 4);
2. backbone:  a small randomly initialised ViT, saved so every step sees the same weights;
3. upsampler: ``tools/train_upsampler.py`` trains AnyUp on it (crop-consistency objective);
4. compare:   ``tools/eval_upsampling.py`` scores bilinear, bicubic, a guided filter, random
              AnyUp and the trained AnyUp: feature fidelity, linear-probe mIoU, and a
              low-resolution probe applied to the upsampled features; the table is printed
              and saved (``quality.md``/``quality.json``);
5. pictures:  ``tools/visualize.py`` writes PCA panels and an attention map (``vis_features/``);
6. segment:   mmseg training with ``AnyUpNeck`` holding the trained upsampler, then a test run
              that writes predictions (``predictions/``) and overlays (``vis/``) as PNGs.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from PIL import Image  # noqa: E402

from anyup_neck import runtime  # noqa: E402
from anyup_neck.mm.datasets import write_demo_datasets  # noqa: E402
from anyup_neck.mm.models import TimmBackbone  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
UPSAMPLER_CONFIG = osp.join(REPO, 'configs', 'upsampler', 'demo_synthetic.py')
SEGMENTATION_CONFIG = osp.join(REPO, 'configs', 'demo', 'shapes_vit_anyup_linear.py')

sys.path.insert(0, TOOLS)
import eval_upsampling  # noqa: E402
import visualize  # noqa: E402
from _runner_cli import build_runner, enable_visualization, set_prediction_output  # noqa: E402


def step(title: str) -> None:
    print(f'\n=== {title} ===', flush=True)


def save_backbone(path: str, seed: int = 0) -> dict:
    """Build the upsampler demo's random ViT (seeded), save its weights; return its config."""
    backbone_cfg = dict(Config.fromfile(UPSAMPLER_CONFIG).model.backbones.vit)
    backbone_cfg.pop('type', None)
    torch.manual_seed(seed)
    backbone = TimmBackbone(**backbone_cfg)
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save(backbone.model.state_dict(), path)
    return dict(backbone_cfg, pretrained=path)


def train_upsampler(work_dir: str, backbone_file: str, iters: int) -> str:
    """Run tools/train_upsampler.py (its own process, as a user would); return the export."""
    command = [sys.executable, osp.join(TOOLS, 'train_upsampler.py'), UPSAMPLER_CONFIG,
               '--work-dir', work_dir, '--cfg-options',
               f'model.backbones.vit.pretrained={backbone_file}', f'train_cfg.max_iters={iters}',
               f'train_cfg.val_interval={iters}', f'default_hooks.checkpoint.interval={iters}']
    print(' '.join(command), flush=True)
    subprocess.run(command, check=True)
    return osp.join(work_dir, 'anyup_latest.pth')


def backbone_arguments(backbone: dict) -> list[str]:
    """The eval/visualize command-line flags for the saved backbone."""
    flags = ['--backbone', backbone['model_name'], '--backbone-weights', backbone['pretrained'],
             '--backbone-kwargs', json.dumps(backbone.get('model_kwargs', {}))]
    return flags + (['--backbone-norm'] if backbone.get('norm') else [])


def showcase(data_root: str, size: int) -> tuple[str, tuple[int, int]]:
    """The validation scene with the most shape pixels, and a shape-boundary pixel in it
    nearest to the centre (where image guidance matters), in ``size`` x ``size`` coordinates."""
    names = sorted(os.listdir(osp.join(data_root, 'annotations', 'validation')))
    labels = {name: np.asarray(Image.open(osp.join(data_root, 'annotations', 'validation', name)))
              for name in names}
    name = max(names, key=lambda n: int((labels[n] > 1).sum()))
    shapes = labels[name] > 1
    edge = shapes & ~np.pad(shapes, 1, mode='edge')[:-2, 1:-1]       # shape pixel below background
    edge |= shapes & ~np.pad(shapes, 1, mode='edge')[1:-1, :-2]      # ... or right of it
    rows, cols = np.nonzero(edge if edge.any() else np.ones_like(shapes))
    scale = size / shapes.shape[0]
    centre = np.array(shapes.shape) / 2
    i = int(np.argmin((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2))
    image = osp.join(data_root, 'images', 'validation', osp.splitext(name)[0] + '.jpg')
    return image, (int(rows[i] * scale), int(cols[i] * scale))


def segment(args: argparse.Namespace, upsampler_file: str, upsampler_cfg: dict) -> dict:
    """mmseg training + test of the demo segmentation config with the trained AnyUp."""
    cfg = Config.fromfile(SEGMENTATION_CONFIG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = osp.join(args.data_root, 'ade')
    cfg.work_dir = args.work_dir
    cfg.model.neck.upsampler = upsampler_cfg
    cfg.model.neck.init_cfg.checkpoint = upsampler_file
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # Evaluated once, by the test run below (which also writes the PNGs): no validation.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    set_prediction_output(cfg, osp.join(args.work_dir, 'predictions'))
    enable_visualization(cfg, osp.join(args.work_dir, 'vis'))
    runner = build_runner(cfg)
    runner.train()
    return runner.test()


def main(argv: list[str] | None = None) -> None:
    runtime.apply()  # the fast-CPU process settings, inherited by the steps it starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--num-train', type=int, default=200, help='generated training scenes')
    parser.add_argument('--num-val', type=int, default=40, help='generated validation scenes')
    parser.add_argument('--size', type=int, default=64, help='generated image side (pixels)')
    parser.add_argument('--eval-size', type=int, default=128,
                        help='side of the scenes generated for the comparison (step 4): the '
                        'resolution the demo upsampler is trained at')
    parser.add_argument('--upsampler-iters', type=int, default=300)
    parser.add_argument('--probe-steps', type=int, default=300)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides for the segmentation config (step 6)')
    args = parser.parse_args(argv)

    step('1. data')
    write_demo_datasets(args.data_root, args.num_train, args.num_val, args.size)
    quality_root = osp.join(args.data_root, 'quality')
    write_demo_datasets(quality_root, args.num_train, args.num_val, args.eval_size, seed=1)
    step('2. backbone: a random ViT, saved so that every step uses the same weights')
    backbone = save_backbone(osp.join(args.work_dir, 'backbone_vit.pth'))
    step(f'3. train the upsampler ({args.upsampler_iters} iterations)')
    upsampler_file = train_upsampler(osp.join(args.work_dir, 'upsampler'),
                                     backbone['pretrained'], args.upsampler_iters)
    upsampler_cfg = dict(Config.fromfile(UPSAMPLER_CONFIG).model.upsampler)

    step('4. compare upsamplers on held-out scenes')
    data = osp.join(quality_root, 'ade')
    eval_upsampling.main([
        '--data-root', data, '--image-size', str(args.eval_size), *backbone_arguments(backbone),
        '--methods', 'bilinear', 'bicubic', 'guided_filter', 'anyup_random',
        '--checkpoint', f'anyup_trained={upsampler_file}', '--lfu-mode', upsampler_cfg['lfu_mode'],
        '--probe-steps', str(args.probe_steps),
        '--json', osp.join(args.work_dir, 'quality.json'),
        '--markdown', osp.join(args.work_dir, 'quality.md')])

    step('5. pictures')
    image, pixel = showcase(data, args.eval_size)
    visualize.main([
        '--image', image,
        '--image-size', str(args.eval_size), *backbone_arguments(backbone),
        '--methods', 'bilinear', 'guided_filter', '--checkpoint',
        f'anyup_trained={upsampler_file}', '--lfu-mode', upsampler_cfg['lfu_mode'],
        '--attention-pixel', *map(str, pixel),
        '--out-dir', osp.join(args.work_dir, 'vis_features')])

    step('6. segmentation with AnyUpNeck holding the trained upsampler')
    metrics = segment(args, upsampler_file, upsampler_cfg)
    print(f'\ndemo finished: segmentation {metrics}; upsampler comparison in '
          f'{osp.join(args.work_dir, "quality.md")}; pictures in {args.work_dir}/vis_features, '
          f'predictions/ and vis/', flush=True)


if __name__ == '__main__':
    main()
