"""Window attention: each pixel of an H x W query map attends, per head, to the keys of an
h x w map inside a rectangular window around its normalised position; the heads' softmax
weights are averaged and applied to the values (any number of channels).

One entry point (:func:`window_attention`), several backends (:data:`BACKENDS`), the window
rule every backend shares (:func:`window_bounds_1d`, :func:`window_mask`).
"""
from .window_attention import (BACKENDS, check_window_attention_args, register_backend,
                               resolve_backend, window_attention)
from .windows import window_bounds_1d, window_mask

__all__ = ['window_attention', 'BACKENDS', 'register_backend', 'resolve_backend',
           'check_window_attention_args', 'window_bounds_1d', 'window_mask']
