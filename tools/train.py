"""Train a segmentor / depth estimator from an mmseg-style config (mmseg's CLI).

    python tools/train.py configs/ade20k_dinov2_anyup.py [--work-dir DIR] [--resume [CKPT]]
        [--amp] [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
    bash tools/dist_train.sh configs/ade20k_dinov2_anyup.py 8     # torchrun, 8 processes
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.runner import Runner  # noqa: E402
from mmseg.registry import RUNNERS  # noqa: E402

from anyup_neck.mm.cli import base_parser, enable_amp, load_config  # noqa: E402
from anyup_neck.mm.distributed import prepare_cpu_distributed  # noqa: E402


def main() -> None:
    parser = base_parser('Train a segmentor (mmseg + anyup_neck)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or without a value from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    args = parser.parse_args()
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
