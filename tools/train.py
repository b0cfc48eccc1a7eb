"""Train a segmentor / depth estimator from an mmseg-style config (mmseg's CLI).

    python tools/train.py configs/ade20k_dinov2_anyup.py [--work-dir DIR] [--resume [CKPT]]
        [--amp] [--cfg-options k=v ...] [--launcher none|pytorch|slurm]
    bash tools/dist_train.sh configs/ade20k_dinov2_anyup.py 8     # torchrun, 8 processes
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from _runner_cli import (add_training_options, apply_training_options,  # noqa: E402
                         base_parser, build_runner, load_config, releasing_process_group)


def main() -> None:
    parser = base_parser('Train a segmentor (mmseg + anyup_neck)')
    add_training_options(parser)
    args = parser.parse_args()
    cfg = load_config(args)
    apply_training_options(cfg, args)
    with releasing_process_group():
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
