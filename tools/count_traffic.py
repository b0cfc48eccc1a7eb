"""Count, without a GPU, the memory traffic and the operations of AnyUp's GPU path: the forward
or a training step run on meta tensors (shapes, no data) through the code paths CUDA tensors
take, each operation's reads and writes counted by tools/_traffic.py.

    python tools/count_traffic.py                                  # forward and train step
    python tools/count_traffic.py --modes train --batch 4 --cuda-kernels
    python tools/count_traffic.py --dtype bf16 --cuda-kernels --backend cuda_tiled

A bfloat16 model stands in for autocast (meta tensors have none). ``--cuda-kernels`` counts
the extension's fused CUDA kernels where CUDA would run them (no autograd recording;
``anyup_neck.ops.fused.use_cuda_kernels``), each as the tensors it reads and writes. The time
printed is the traffic at ``--bandwidth`` TB/s: a floor for the operations as written, to set
against a measured time (``tools/benchmark.py --device cuda --traffic``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from _traffic import TrafficCounter  # noqa: E402

from anyup_neck import AnyUp  # noqa: E402
from anyup_neck.ops import extension, fused  # noqa: E402

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


class ForGood:
    """Changes for the rest of the process (pytest's ``monkeypatch`` undoes its own)."""
    setattr = staticmethod(setattr)

    @staticmethod
    def setitem(mapping: dict, key, value) -> None:
        mapping[key] = value


def select_gpu_paths_on_meta(patch=ForGood, cuda_kernels: bool = False) -> None:
    """Make meta tensors take the code paths of CUDA tensors (autograd on fake CUDA tensors
    needs a real device): the GPU formulations, with ``cuda_kernels`` the extension's CUDA
    kernels wherever autograd does not record and the ``cuda_tiled`` backend; autocast off.
    ``patch``: :class:`ForGood` or pytest's ``monkeypatch``."""
    patch.setattr(fused, 'uses_gpu_formulation', lambda x: True)
    patch.setattr(torch, 'is_autocast_enabled', lambda *args: False)
    if cuda_kernels:
        patch.setattr(fused, 'use_cuda_kernels', True)
        patch.setattr(fused, 'cuda_kernels_usable', lambda *t: not fused.records_grad(*t))
        patch.setattr(extension, 'has_cuda_kernels', lambda: True)
        patch.setitem(importlib.import_module('anyup_neck.ops.window_attention').BACKENDS,
                      'cuda_tiled', extension.window_attention_cuda_tiled)


def count(mode: str, size: int, fmap: int, channels: int, batch: int = 1,
          dtype: torch.dtype = torch.float32, backend: str = 'torch',
          **model_options) -> TrafficCounter:
    """The counter after one ``mode`` ('forward': no autograd; 'train': forward and backward,
    the upsampler trainable) of AnyUp (``model_options``: its other arguments) on meta
    tensors: ``batch`` images of size x size, features (channels, fmap, fmap). Select the GPU
    paths first (:func:`select_gpu_paths_on_meta`)."""
    with torch.device('meta'):
        model = AnyUp(backend=backend, **model_options).to(dtype).train(mode == 'train')
        image = torch.empty(batch, 3, size, size, dtype=dtype)
        features = torch.empty(batch, channels, fmap, fmap, dtype=dtype)
        with TrafficCounter() as counter, torch.set_grad_enabled(mode == 'train'):
            out = model(image, features)
            if mode == 'train':
                out.backward(torch.empty_like(out))
    return counter


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--modes', nargs='+', choices=('forward', 'train'),
                        default=['forward', 'train'])
    parser.add_argument('--size', type=int, default=448, help='output (= image) size')
    parser.add_argument('--map', type=int, default=32, help='feature map size')
    parser.add_argument('--channels', type=int, default=384)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32')
    parser.add_argument('--backend', choices=('torch', 'cuda_tiled'), default='torch',
                        help="the attention: the tiled PyTorch one (CUDA's default) or the "
                             "tiled CUDA kernels (needs --cuda-kernels)")
    parser.add_argument('--cuda-kernels', action='store_true',
                        help="count the extension's fused CUDA kernels where CUDA runs them")
    parser.add_argument('--bandwidth', type=float, default=4.3,
                        help="TB/s the time column assumes (default: the H200's, as the "
                             "baseline measurements in README quote it)")
    args = parser.parse_args(argv)
    if args.backend == 'cuda_tiled' and not args.cuda_kernels:
        parser.error("--backend cuda_tiled: expected --cuda-kernels, got none")
    select_gpu_paths_on_meta(cuda_kernels=args.cuda_kernels)
    lines = []
    for mode in args.modes:
        counter = count(mode, args.size, args.map, args.channels, args.batch,
                        DTYPES[args.dtype], args.backend)
        lines.append(f'{mode} {args.size}<-{args.map} C={args.channels} batch {args.batch} '
                     f'{args.dtype} {args.backend}{" +kernels" * args.cuda_kernels}: '
                     f'{counter.bytes / 1e9:.1f} GB, {counter.ops} ops, '
                     f'{counter.bytes / args.bandwidth / 1e9:.1f} ms at {args.bandwidth} TB/s')
        print(lines[-1])
    return lines


if __name__ == '__main__':
    main()
