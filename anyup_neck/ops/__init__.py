"""Window attention for AnyUp: one entry point, several backends (see DESIGN.md "The op")."""
from .window_attention import (BACKENDS, check_window_attention_args, register_backend,
                               resolve_backend, window_attention)
from .windows import window_bounds_1d, window_mask

__all__ = ['window_attention', 'BACKENDS', 'register_backend', 'resolve_backend',
           'check_window_attention_args', 'window_bounds_1d', 'window_mask']
