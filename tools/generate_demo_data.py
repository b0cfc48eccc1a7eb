"""Write the procedural demo dataset (ADE20K and NYUv2 layouts), once.

    python tools/generate_demo_data.py [--out data/demo] [--num-train 200] [--num-val 40]
        [--size 64] [--seed 0]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from anyup_neck.mm.datasets import write_demo_datasets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/demo', help='root of ade/ and nyu/')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=40)
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    write_demo_datasets(args.out, args.num_train, args.num_val, args.size, args.seed)


if __name__ == '__main__':
    main()
