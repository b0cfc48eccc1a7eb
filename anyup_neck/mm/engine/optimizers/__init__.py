"""Optimizer wrappers and constructors registered in mmseg's registries."""
from .optim_wrappers import CPUAmpOptimWrapper, TrainableParamsOptimWrapperConstructor

__all__ = ['TrainableParamsOptimWrapperConstructor', 'CPUAmpOptimWrapper']
