"""Train the AnyUp upsampler itself (crop-consistency objective) with mmengine's Runner.

    python tools/train_upsampler.py configs/upsampler/demo_synthetic.py
    python tools/train_upsampler.py configs/upsampler/anyup_dinov2_imagenet.py [--work-dir DIR]
        [--resume [CKPT]] [--amp] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
    torchrun --nproc_per_node=8 tools/train_upsampler.py CONFIG --launcher pytorch
    # CPU-only hosts: add --cfg-options env_cfg.dist_cfg.backend=gloo

The work dir receives Runner checkpoints (``iter_N.pth``, resumable) and, beside each, the
upsampler alone as a plain AnyUp state_dict with the official key names (``anyup_iter_N.pth``,
``anyup_latest.pth``): load those with ``AnyUp.from_pretrained(path, lfu_mode='paper')`` or
``AnyUpNeck``'s ``init_cfg=dict(type='Pretrained', checkpoint=path)``.
"""
from __future__ import annotations

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from _runner_cli import (add_training_options, apply_training_options,  # noqa: E402
                         base_parser, build_runner, load_config, releasing_process_group)


def build_config(argv: list[str] | None = None) -> Config:
    """The config named on the command line, with the command line applied."""
    parser = base_parser('Train the AnyUp upsampler (crop-consistency objective)')
    add_training_options(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args)
    apply_training_options(cfg, args)
    return cfg


def main(argv: list[str] | None = None) -> Runner:
    """Train as the command line says; return the Runner (its model holds the result)."""
    with releasing_process_group():
        runner = build_runner(build_config(argv))
        runner.train()
    return runner


if __name__ == '__main__':
    main()
