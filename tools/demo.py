"""``make demo``: procedural data (once), a few minutes of CPU training with AnyUpNeck, test.

    python tools/demo.py [--config configs/demo/shapes_vit_anyup_linear.py]
        [--data-root data/demo] [--num-train 200] [--num-val 40] [--size 64]
        [--work-dir work_dirs/demo] [--cfg-options k=v ...]

Writes to the work dir: the training log and checkpoint, ``predictions/`` (one label PNG per
validation image, ADE20K values: class index + 1) and ``vis/`` (coloured overlays).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.config import Config, DictAction  # noqa: E402

from anyup_neck.mm.cli import (build_runner, enable_visualization,  # noqa: E402
                               set_prediction_output)
from anyup_neck.mm.datasets import write_demo_datasets  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config',
                        default=osp.join(REPO, 'configs', 'demo', 'shapes_vit_anyup_linear.py'))
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--num-train', type=int, default=200, help='generated training scenes')
    parser.add_argument('--num-val', type=int, default=40, help='generated validation scenes')
    parser.add_argument('--size', type=int, default=64, help='generated image side (pixels)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()

    write_demo_datasets(args.data_root, args.num_train, args.num_val, args.size)
    cfg = Config.fromfile(args.config)
    layout = 'nyu' if cfg.train_dataloader.dataset.type == 'NYUDataset' else 'ade'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = osp.join(args.data_root, layout)
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # Evaluated once, by the test run below (which also writes the PNGs): no validation.
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    set_prediction_output(cfg, osp.join(args.work_dir, 'predictions'))
    enable_visualization(cfg, osp.join(args.work_dir, 'vis'))

    runner = build_runner(cfg)
    runner.train()
    metrics = runner.test()
    runner.logger.info(f'demo finished: {metrics}; predictions in '
                       f'{osp.join(args.work_dir, "predictions")}, overlays in '
                       f'{osp.join(args.work_dir, "vis")}')


if __name__ == '__main__':
    main()
