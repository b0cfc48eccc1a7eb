"""Evaluate a checkpoint on a config's test set (mmseg's CLI); optionally write predictions.

    python tools/test.py configs/ade20k_dinov2_anyup.py work_dirs/.../iter_40000.pth
        [--work-dir DIR] [--out PRED_DIR] [--show-dir VIS_DIR] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm]

--out writes each prediction as a PNG (label ids / depth in the metric's scale); --show-dir
writes coloured overlays.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from _runner_cli import (base_parser, build_runner, enable_visualization,  # noqa: E402
                         load_config, releasing_process_group, set_prediction_output,
                         skip_pretrained_weights)


def main() -> None:
    parser = base_parser('Test (and evaluate) a segmentor (mmseg + anyup_neck)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='directory to write predictions to, one PNG per image')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='directory to save painted predictions in')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per shown image')
    args = parser.parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint: expected a checkpoint file, got '
                                f'{args.checkpoint!r} (no such file)')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    skip_pretrained_weights(cfg)  # all weights come from the checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    if args.out is not None:
        set_prediction_output(cfg, args.out)
    with releasing_process_group():
        build_runner(cfg).test()


if __name__ == '__main__':
    main()
