"""CPU-only multi-process training through mmengine's launcher (torchrun + gloo).

mmengine 0.10.7 assumes GPUs in two places: ``init_dist('pytorch')`` calls
``torch.cuda.set_device`` before creating the process group, and ``Runner.wrap_model`` gives
DDP ``device_ids=[LOCAL_RANK]``, which torch rejects for CPU modules. On hosts without CUDA,
:func:`prepare_cpu_distributed` creates the (gloo) process group itself, which the Runner
then finds and keeps, and selects :class:`CPUDistributedDataParallel`, mmengine's DDP wrapper
without ``device_ids``. Runs with GPUs are left untouched.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules (torch wants ``device_ids=None`` there)."""

    def __init__(self, module: nn.Module, device_ids: list[int] | None = None,
                 **kwargs) -> None:
        if all(p.device.type == 'cpu' for p in module.parameters()):
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def prepare_cpu_distributed(cfg: Config) -> None:
    """On a CUDA-less host with ``launcher='pytorch'``: gloo process group + CPU DDP wrapper."""
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise ValueError(f"launcher: CPU-only multi-process training needs 'pytorch' "
                         f"(torchrun), got {cfg.launcher!r}")
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
    if backend != 'gloo':
        raise ValueError(f"env_cfg.dist_cfg.backend: expected 'gloo' without CUDA GPUs, got "
                         f"{backend!r}; add --cfg-options env_cfg.dist_cfg.backend=gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # rank/world size from torchrun's env://
    # Scoped name: mmengine's wrap_model looks the type up in its root registry.
    cfg.setdefault('model_wrapper_cfg', dict(type='mmseg.CPUDistributedDataParallel'))
