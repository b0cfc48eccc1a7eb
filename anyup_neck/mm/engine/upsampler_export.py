"""Plain AnyUp state_dicts (official key names) out of upsampler-training checkpoints.

The files load with ``AnyUp.from_pretrained(path, lfu_mode=...)`` and, through
``init_cfg=dict(type='Pretrained', checkpoint=path)``, into ``AnyUpNeck``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch

#: Where ``AnyUpCropConsistency`` keeps the upsampler in its state_dict.
UPSAMPLER_PREFIX = 'upsampler.'


def upsampler_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``upsampler.*`` entries of an ``AnyUpCropConsistency`` state_dict, prefix stripped,
    on the CPU."""
    plain = {k[len(UPSAMPLER_PREFIX):]: v.detach().cpu() for k, v in state.items()
             if k.startswith(UPSAMPLER_PREFIX)}
    if not plain:
        raise ValueError(f'state: expected AnyUpCropConsistency entries under '
                         f'{UPSAMPLER_PREFIX!r}, found none among {sorted(state)[:5]}')
    return plain


def save_upsampler(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Write :func:`upsampler_state_dict` of ``state`` to ``path`` (atomically); return it."""
    path = os.fspath(path)
    temporary = f'{path}.tmp'
    torch.save(upsampler_state_dict(state), temporary)
    os.replace(temporary, path)
    return path
