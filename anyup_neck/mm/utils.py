"""Argument checks shared by the mm roles (datasets' transforms and the models)."""
from __future__ import annotations

from collections.abc import Sequence

Size = tuple[int, int]


def as_size(name: str, value: int | Sequence[int]) -> Size:
    """``value`` as a (height, width) pair of positive ints; errors name ``name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f'{name}: expected a positive int or a pair (height, width) of them, '
                         f'got {value!r}')
    return int(value[0]), int(value[1])
