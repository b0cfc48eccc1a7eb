"""Optimizer wrappers: frozen parameters left out of the optimizer; mixed precision on CPU."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableParamsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, minus parameters with ``requires_grad=False``.

    Frozen backbones and upsamplers then hold no optimizer state, and no optimizer setting
    (weight decay included) can touch them. ``paramwise_cfg`` works as usual.

    Config: ``optim_wrapper = dict(constructor='TrainableParamsOptimWrapperConstructor', ...)``.
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, 'module', model)  # DDP-wrapped
        trainable = [p for p in model.parameters() if p.requires_grad]
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        print_log(f'optimizer: {sum(p.numel() for p in trainable)} trainable parameters; '
                  f'{frozen} frozen ones left out', logger='current')
        if self.paramwise_cfg:
            return super().__call__(model)  # through add_params below
        optimizer = OPTIMIZERS.build(dict(self.optimizer_cfg, params=trainable))
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: int | float | None = None) -> None:
        super().add_params(params, module, prefix, is_dcn_module)
        params[:] = [group for group in params if group['params'][0].requires_grad]


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """Mixed precision on CPU: bfloat16 autocast around the forward, no loss scaling.

    mmengine's ``AmpOptimWrapper`` needs a CUDA/NPU/MLU device; ``tools/train.py --amp``
    picks this wrapper when none is present. (On CPUs without native bf16, oneDNN may need
    ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``.)
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield
