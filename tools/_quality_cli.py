"""What the quality tools (eval_upsampling, visualize) share: the backbone and the methods
named on the command line."""
from __future__ import annotations

import argparse
import json

import torch

from anyup_neck.mm.models import TimmBackbone
from anyup_neck.quality.evaluation import FeatureFn, Method
from anyup_neck.upsampler import AnyUp
from anyup_neck.upsampler.baselines import BASELINES
from anyup_neck.upsampler.checkpoint import architecture_from_state_dict


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backbone``, ``--backbone-weights``, ``--backbone-kwargs``, ``--out-index``,
    ``--backbone-norm``, ``--seed``."""
    group = parser.add_argument_group('backbone')
    group.add_argument('--backbone', default='vit_small_patch14_dinov2',
                       help='timm model name (default: %(default)s)')
    group.add_argument('--backbone-weights', help='local weights file (default: random init)')
    group.add_argument('--backbone-kwargs', type=json.loads, default={},
                       help='JSON of extra timm.create_model arguments, e.g. '
                       '\'{"init_values": 1.0}\'')
    group.add_argument('--out-index', type=int, default=-1, help='block / stage to read')
    group.add_argument('--backbone-norm', action='store_true',
                       help="apply the model's final norm to the features")
    group.add_argument('--seed', type=int, default=0, help='seed of random initialisation')


def add_method_arguments(parser: argparse.ArgumentParser, default: list[str]) -> None:
    """``--methods`` (baselines and ``anyup_random``) and ``--checkpoint NAME=PATH``."""
    parser.add_argument('--methods', nargs='+', default=default,
                        choices=[*BASELINES, 'anyup_random'],
                        help='training-free baselines, and AnyUp with random weights')
    parser.add_argument('--checkpoint', nargs='+', default=[], metavar='NAME=PATH',
                        help='AnyUp checkpoints to compare (official files or exports of '
                        'tools/train_upsampler.py), each under its own name')
    parser.add_argument('--lfu-mode', choices=['official', 'paper'], default=None,
                        help='LFU mode of the checkpoints (default: official for official '
                        "files; exports of train_upsampler.py are usually 'paper')")
    parser.add_argument('--backend', default='auto', help='window-attention backend')


def build_backbone(args: argparse.Namespace) -> tuple[TimmBackbone, FeatureFn]:
    """The frozen backbone and a function RGB [0, 1] (B, 3, H, W) -> features (B, C, h, w)."""
    torch.manual_seed(args.seed)
    backbone = TimmBackbone(args.backbone, pretrained=args.backbone_weights,
                            out_indices=(args.out_index,), norm=args.backbone_norm,
                            model_kwargs=args.backbone_kwargs)
    backbone.eval().requires_grad_(False)

    def features(images: torch.Tensor) -> torch.Tensor:
        return backbone(backbone.normalise(images))[0]
    return backbone, features


def build_methods(args: argparse.Namespace) -> dict[str, Method]:
    """Name -> method, in command-line order: baselines, ``anyup_random``, checkpoints.

    The AnyUp methods are the models themselves (in eval mode), so tools that need more than
    the upsampling (e.g. attention maps) pick them out with ``isinstance(method, AnyUp)``.
    ``anyup_random`` has the architecture of the first checkpoint (the default AnyUp when
    there is none) and ``--lfu-mode``, so it isolates what training adds.
    """
    kwargs = dict(backend=args.backend)
    if args.lfu_mode:
        kwargs['lfu_mode'] = args.lfu_mode
    checkpoints = {}
    for item in args.checkpoint:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            raise ValueError(f'--checkpoint: expected NAME=PATH, got {item!r}')
        checkpoints[name] = AnyUp.from_pretrained(path, **kwargs).eval()
    methods: dict[str, Method] = {}
    for name in args.methods:
        if name == 'anyup_random':
            torch.manual_seed(args.seed)
            template = next(iter(checkpoints.values()), None)
            architecture = {} if template is None else architecture_from_state_dict(
                template.state_dict())
            methods[name] = AnyUp(**architecture, **kwargs).eval()
        else:
            methods[name] = BASELINES[name]
    methods.update(checkpoints)
    return methods
