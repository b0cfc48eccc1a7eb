"""Hooks of upsampler training: export the weights, validate the untrained upsampler."""
from __future__ import annotations

import os

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..upsampler_export import save_upsampler


@HOOKS.register_module()
class ExportUpsamplerHook(Hook):
    """On every checkpoint save, write ``<work_dir>/anyup_iter_<N>.pth`` and refresh
    ``<work_dir>/anyup_latest.pth``: the upsampler alone, official key names, ready for
    ``AnyUp.from_pretrained`` and ``AnyUpNeck``'s ``init_cfg``.
    """

    priority = 'LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint['state_dict']
        iteration = checkpoint['meta']['iter']
        path = save_upsampler(state, os.path.join(runner.work_dir, f'anyup_iter_{iteration}.pth'))
        save_upsampler(state, os.path.join(runner.work_dir, 'anyup_latest.pth'))
        print_log(f'upsampler weights exported to {path}', logger='current')


@HOOKS.register_module()
class ValidateBeforeTrainHook(Hook):
    """Run the validation loop once before the first iteration of a fresh run, so the log
    starts with the untrained upsampler's held-out metrics (the baseline to improve on)."""

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        if runner.iter == 0 and runner.val_loop is not None:
            runner.val_loop.run()
