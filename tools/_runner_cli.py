"""What tools/train.py, test.py, train_upsampler.py and demo.py share: mmseg's command line,
config and Runner.

The options and their meaning follow mmseg's own tools (``--work-dir``, ``--cfg-options``,
``--launcher none|pytorch|slurm|mpi``, ``--local-rank``); distributed runs are set up by
mmengine's Runner from ``--launcher`` (``torchrun`` sets the environment it reads).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import os.path as osp
from collections.abc import Iterator

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from anyup_neck.mm.engine import prepare_cpu_distributed


def base_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the positional ``config`` and the options common to both tools."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='directory for logs, checkpoints and results '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value (e.g. '
                        'model.backbone.pretrained=ckpt.pth train_cfg.max_iters=100); '
                        'lists as key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (pytorch = torchrun)')
    # torch.distributed.launch passes --local-rank (torch >= 2) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """Config from ``args.config`` with the launcher, ``--cfg-options`` and work_dir applied.

    work_dir priority: ``--work-dir`` > the config's ``work_dir`` > ./work_dirs/<config name>.
    """
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config: expected a config file, got {args.config!r} '
                                f'(no such file)')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """``--resume [CKPT]`` and ``--amp``, as mmseg's tools/train.py has them."""
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='CKPT',
                        help='resume from CKPT, or without a value from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (fp16 '
                        'AmpOptimWrapper on GPUs, bf16 CPUAmpOptimWrapper on CPU)')


def apply_training_options(cfg: Config, args: argparse.Namespace) -> None:
    """Apply :func:`add_training_options`' ``--amp`` and ``--resume`` to ``cfg``."""
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume: expected a checkpoint file, got '
                                    f'{args.resume!r} (no such file)')
        cfg.resume, cfg.load_from = True, args.resume


def skip_pretrained_weights(cfg: Config) -> None:
    """Build without reading the backbone / upsampler weight files: a checkpoint being tested
    (or used for inference) holds every weight, frozen ones included."""
    backbone, neck = cfg.model.get('backbone') or {}, cfg.model.get('neck') or {}
    if 'pretrained' in backbone:
        backbone['pretrained'] = None
    if isinstance(neck.get('init_cfg'), dict) and 'checkpoint' in neck['init_cfg']:
        neck['init_cfg']['checkpoint'] = None


def enable_amp(cfg: Config) -> None:
    """Switch ``OptimWrapper`` to mixed precision: mmengine's ``AmpOptimWrapper`` (fp16,
    dynamic loss scale) on GPUs, :class:`CPUAmpOptimWrapper` (bf16 autocast) without one."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in ('AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f"--amp: expected optim_wrapper.type 'OptimWrapper' (to switch to "
                         f"a mixed-precision wrapper), got {wrapper!r}")
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'


def set_prediction_output(cfg: Config, out_dir: str) -> None:
    """Make the test metrics (IoUMetric / DepthMetric) write each prediction as a PNG."""
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) \
        else [cfg.test_evaluator]
    for evaluator in evaluators:
        evaluator['output_dir'] = out_dir
        evaluator['keep_results'] = True


def enable_visualization(cfg: Config, show_dir: str | None, show: bool = False,
                         wait_time: float = 2.0) -> None:
    """Turn on the config's visualization hook for every image: overlays under ``show_dir``."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError("default_hooks.visualization: expected a hook config "
                         "(dict(type='SegVisualizationHook')) to draw predictions, got none")
    hook['draw'] = True
    hook['interval'] = 1
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        cfg.visualizer['save_dir'] = show_dir


def build_runner(cfg: Config) -> Runner:
    """mmengine's Runner for ``cfg`` (or ``cfg.runner_type``), CPU-only torchrun included."""
    prepare_cpu_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


@contextlib.contextmanager
def releasing_process_group() -> Iterator[None]:
    """Destroy, on leaving the block, the process group a distributed run created in it.

    mmengine's Runner (or :func:`prepare_cpu_distributed`) creates the group and never
    destroys it. Left to interpreter shutdown, gloo's worker threads can still be joinable
    when they are destroyed, and a rank that finished its run aborts ("terminate called
    without an active exception"); NCCL warns. A group that existed before the block (the
    caller's) is left alone.
    """
    created_here = not (dist.is_available() and dist.is_initialized())
    try:
        yield
    finally:
        if created_here and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
