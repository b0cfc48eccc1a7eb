"""Helper run by torchrun in test_train_upsampler.py (not a test itself).

Trains like ``tools/train_upsampler.py`` (same command line) and saves this rank's upsampler
weights before and after training to ``<work_dir>/rank<R>_{before,after}.pth``.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                            'tools'))

import torch  # noqa: E402
import train_upsampler as tool  # noqa: E402
from _runner_cli import build_runner, releasing_process_group  # noqa: E402
from mmengine.dist import get_rank  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402


def main() -> None:
    with releasing_process_group():
        runner = build_runner(tool.build_config(sys.argv[1:]))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        prefix = osp.join(runner.work_dir, f'rank{get_rank()}')
        torch.save({k: v.clone() for k, v in model.upsampler.state_dict().items()},
                   f'{prefix}_before.pth')
        runner.train()
        torch.save(model.upsampler.state_dict(), f'{prefix}_after.pth')


if __name__ == '__main__':
    main()
