"""Helper run by torchrun in test_train_upsampler.py (not a test itself).

Trains like ``tools/train_upsampler.py`` (same command line) and saves this rank's upsampler
weights before and after training to ``<work_dir>/rank<R>_{before,after}.pth``.
"""
import importlib.util
import os.path as osp
import sys

import torch
from mmengine.dist import get_rank
from mmengine.model import is_model_wrapper

from anyup_neck.mm.cli import build_runner

TOOL = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                'train_upsampler.py')


def main() -> None:
    spec = importlib.util.spec_from_file_location('train_upsampler', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    runner = build_runner(tool.build_config(sys.argv[1:]))
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    prefix = osp.join(runner.work_dir, f'rank{get_rank()}')
    torch.save({k: v.clone() for k, v in model.upsampler.state_dict().items()},
               f'{prefix}_before.pth')
    runner.train()
    torch.save(model.upsampler.state_dict(), f'{prefix}_after.pth')


if __name__ == '__main__':
    main()
