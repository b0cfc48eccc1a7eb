"""Loading AnyUp weights: official checkpoints unchanged, and files written by this package.

A checkpoint is either a plain state_dict or a dict holding one under ``'state_dict'`` or
``'model'`` (mmengine / torch.hub conventions). Mismatches are reported in full, never
silently skipped.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn


def read_state_dict(path_or_url: str | os.PathLike, map_location: str | torch.device = 'cpu',
                    prefix: str = '') -> dict[str, torch.Tensor]:
    """Read a state_dict from a local file or a URL (downloaded once into torch.hub's cache).

    ``prefix`` selects the entries under it (e.g. ``'upsampler.'`` in a training checkpoint)
    and strips it.
    """
    location = os.fspath(path_or_url)
    if location.startswith(('http://', 'https://')):
        loaded = torch.hub.load_state_dict_from_url(location, map_location=map_location,
                                                    weights_only=True)
    else:
        if not os.path.isfile(location):
            raise FileNotFoundError(f'checkpoint: expected an existing file or an http(s) URL, '
                                    f'got {location!r}')
        loaded = torch.load(location, map_location=map_location, weights_only=True)
    state = loaded
    for key in ('state_dict', 'model'):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f'checkpoint: expected a state_dict (mapping of tensors), got '
                         f'{type(state).__name__} in {location!r}')
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f'checkpoint: no entries under prefix {prefix!r} in {location!r}')
    return dict(state)


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError listing every missing key, unexpected key and shape mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shapes = [f'{k}: expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)}'
                    for k in sorted(set(expected) & set(state))
                    if tuple(expected[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f'missing keys ({len(missing)}): {missing}')
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): {unexpected}')
    if wrong_shapes:
        problems.append(f'shape mismatches ({len(wrong_shapes)}): {wrong_shapes}')
    if problems:
        raise ValueError(f'checkpoint does not match {type(module).__name__}: '
                         + '; '.join(problems))


def load_checked(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``module.load_state_dict(state)`` after :func:`check_state_dict`."""
    check_state_dict(module, state)
    module.load_state_dict(state)


def architecture_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict:
    """The AnyUp constructor arguments that a state_dict determines by its shapes."""
    try:
        image_conv = state['image_encoder.0.weight']
        basis = state['key_features_encoder.0.basis']
    except KeyError as err:
        raise ValueError(f'checkpoint: not an AnyUp state_dict, missing key {err}') from None
    return dict(qk_dim=image_conv.shape[0], in_channels=image_conv.shape[1],
                image_kernel_size=image_conv.shape[-1], lfu_basis=basis.shape[0],
                lfu_kernel_size=basis.shape[-1])
