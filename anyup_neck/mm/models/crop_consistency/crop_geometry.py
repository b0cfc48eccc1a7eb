"""Crop geometry of the crop-consistency objective (paper Sec. 4.3, App. C).

A training image of ``image_size`` (448 px in the paper) is seen by the backbone twice:

* downsized to ``input_size`` (224 px): features ``p`` on the *feature grid*
  ``input_size / P`` (P = patch size), which AnyUp upsamples to the *output grid*
  ``image_size / P`` (twice the feature grid in the paper);
* as K crops of ``crop_size`` (224 px) whose corners lie on multiples of P in the full image:
  each crop's features (the targets) live on the *crop grid* ``crop_size / P``.

One output cell therefore covers exactly one P x P patch of the full image, and a crop whose
corner is at pixel ``(P * a, P * b)`` covers output cells ``[a, a + crop_grid)`` x
``[b, b + crop_grid)``: that block of the upsampled map is compared with the crop's target.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...utils import Size, as_size


@dataclass(frozen=True)
class CropGeometry:
    """Sizes of one backbone's crop-consistency sample; all in pixels, (height, width).

    Args:
        image_size: the full training image (448).
        input_size: the downsized image that gives the input features (224).
        crop_size: the crops that give the targets (224); at most ``image_size``.
        patch_size: the backbone's patch size (stride of its feature map), which must divide
            the three sizes above.
    """

    image_size: Size
    input_size: Size
    crop_size: Size
    patch_size: int

    def __post_init__(self) -> None:
        for name in ('image_size', 'input_size', 'crop_size'):
            object.__setattr__(self, name, as_size(name, getattr(self, name)))
        P = self.patch_size
        if isinstance(P, bool) or not isinstance(P, int) or P <= 0:
            raise ValueError(f'patch_size: expected a positive int, got {P!r}')
        for name in ('image_size', 'input_size', 'crop_size'):
            size = getattr(self, name)
            if size[0] % P or size[1] % P:
                raise ValueError(f'{name}: expected multiples of the patch size {P}, got {size}')
        if self.crop_size[0] > self.image_size[0] or self.crop_size[1] > self.image_size[1]:
            raise ValueError(f'crop_size: expected at most image_size {self.image_size}, '
                             f'got {self.crop_size}')

    @property
    def feature_grid(self) -> Size:
        """Grid of the input features p (input_size / P)."""
        return self.input_size[0] // self.patch_size, self.input_size[1] // self.patch_size

    @property
    def output_grid(self) -> Size:
        """Grid AnyUp upsamples p to: one cell per patch of the full image (image_size / P)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def crop_grid(self) -> Size:
        """Grid of one crop's target features (crop_size / P)."""
        return self.crop_size[0] // self.patch_size, self.crop_size[1] // self.patch_size

    def sample_origins(self, batch: int, num_crops: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniformly drawn crop corners, (batch, num_crops, 2) int64 in output-grid cells.

        Multiply by ``patch_size`` for the corner in full-image pixels.
        """
        rows = self.output_grid[0] - self.crop_grid[0] + 1
        cols = self.output_grid[1] - self.crop_grid[1] + 1
        flat = torch.randint(rows * cols, (batch, num_crops), generator=generator)
        return torch.stack([flat // cols, flat % cols], dim=-1)


def take_windows(x: torch.Tensor, origins: torch.Tensor, size: Size) -> torch.Tensor:
    """Cut ``size`` windows at ``origins`` out of each map, keeping autograd.

    x: (B, C, H, W); origins: (B, K, 2) int64 top-left corners (row, col) in x's pixels, on
    the host (where :meth:`CropGeometry.sample_origins` draws them: the corners are checked and
    the windows sliced there, so nothing is copied to or read from x's device).
    Returns (B * K, C, *size), window k of image b at index b * K + k.
    """
    B, K = origins.shape[:2]
    if origins.shape != (B, K, 2) or B != x.shape[0]:
        raise ValueError(f'origins: expected shape ({x.shape[0]}, K, 2), '
                         f'got {tuple(origins.shape)}')
    corners = origins.tolist()
    (H, W), (h, w) = x.shape[-2:], size
    if any(r < 0 or c < 0 or r + h > H or c + w > W for row in corners for r, c in row):
        raise ValueError(f'origins: windows of size {tuple(size)} must lie inside the '
                         f'{(H, W)} map, got corners {corners}')
    return _Windows.apply(x, corners, (h, w))


class _Windows(torch.autograd.Function):
    """(B, C, H, W) -> (B * K, C, h, w) windows at host corners [[(r, c)] * K] * B. Its
    backward adds the windows' gradients into one map of zeros (autograd through the slices
    would make a full-size gradient per window and add them up)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, corners: list, size: Size) -> torch.Tensor:
        ctx.shape, ctx.corners, ctx.size = x.shape, corners, size
        h, w = size
        return torch.stack([x[b, :, r:r + h, c:c + w] for b, row in enumerate(corners)
                            for r, c in row])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h, w), windows = ctx.size, iter(grad)
        dx = grad.new_zeros(ctx.shape)
        for b, row in enumerate(ctx.corners):
            for r, c in row:
                dx[b, :, r:r + h, c:c + w].add_(next(windows))
        return dx, None, None
