"""Training machinery around mmengine's Runner: hooks, optimizer wrappers, distributed set-up."""
from .distributed import CPUDistributedDataParallel, prepare_cpu_distributed
from .hooks import ExportUpsamplerHook, ValidateBeforeTrainHook
from .optimizers import CPUAmpOptimWrapper, TrainableParamsOptimWrapperConstructor
from .upsampler_export import save_upsampler, upsampler_state_dict

__all__ = ['CPUDistributedDataParallel', 'prepare_cpu_distributed', 'ExportUpsamplerHook',
           'ValidateBeforeTrainHook', 'CPUAmpOptimWrapper',
           'TrainableParamsOptimWrapperConstructor', 'save_upsampler', 'upsampler_state_dict']
