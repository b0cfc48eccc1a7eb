"""Loss terms of upsampler training."""
from .cos_mse import cos_mse, input_consistency_loss, self_consistency_loss

__all__ = ['cos_mse', 'self_consistency_loss', 'input_consistency_loss']
