"""Crop geometry: crops of the full image land exactly on the upsampled grid."""
import pytest
import torch
import torch.nn.functional as F

from anyup_neck.mm.models.crop_consistency import CropGeometry, take_windows


def _patch_means(x: torch.Tensor, patch: int) -> torch.Tensor:
    """A "backbone" whose feature of a patch is the patch's mean colour (stride = patch)."""
    return F.avg_pool2d(x, patch)


@pytest.mark.parametrize('patch', [14, 16])
@pytest.mark.parametrize('image_cells, input_cells, crop_cells', [
    ((32, 32), (16, 16), (16, 16)),      # the paper: 448/224/224 px at patch 14
    ((12, 9), (6, 5), (5, 4)),           # non-square everything
])
def test_crops_map_exactly_onto_the_output_grid(patch, image_cells, input_cells, crop_cells):
    geometry = CropGeometry(tuple(c * patch for c in image_cells),
                            tuple(c * patch for c in input_cells),
                            tuple(c * patch for c in crop_cells), patch)
    assert geometry.output_grid == image_cells
    assert geometry.feature_grid == input_cells
    assert geometry.crop_grid == crop_cells
    image = torch.rand(3, 3, *geometry.image_size, dtype=torch.float64)
    origins = geometry.sample_origins(3, 5, torch.Generator().manual_seed(patch))
    # The crop's own features (the target) ...
    crops = torch.stack([image[b, :, P * r:P * r + geometry.crop_size[0],
                               P * c:P * c + geometry.crop_size[1]]
                         for b, row in enumerate(origins.tolist()) for r, c in row
                         for P in [patch]])
    targets = _patch_means(crops, patch)
    # ... equal the cells under the crop of the full image's features on the output grid.
    predicted = take_windows(_patch_means(image, patch), origins, geometry.crop_grid)
    assert predicted.shape == (15, 3, *crop_cells)
    torch.testing.assert_close(predicted, targets, rtol=0, atol=1e-12)
    # take_windows on pixels cuts the same crops as the explicit slicing above.
    torch.testing.assert_close(take_windows(image, origins * patch, geometry.crop_size), crops,
                               rtol=0, atol=0)


def test_paper_geometry_upsamples_twice_the_feature_grid():
    for patch, grid in ((14, 16), (16, 14)):
        geometry = CropGeometry(448, 224, 224, patch)
        assert geometry.feature_grid == (grid, grid)
        assert geometry.output_grid == (2 * grid, 2 * grid)
        assert geometry.crop_grid == (grid, grid)


def test_sample_origins_cover_every_patch_aligned_position():
    geometry = CropGeometry((5 * 8, 3 * 8), (16, 16), (2 * 8, 8), 8)
    origins = geometry.sample_origins(50, 20, torch.Generator().manual_seed(0))
    assert origins.dtype == torch.int64 and origins.shape == (50, 20, 2)
    positions = {tuple(o) for o in origins.view(-1, 2).tolist()}
    assert positions == {(r, c) for r in range(4) for c in range(3)}


def test_take_windows_keeps_gradients():
    x = torch.rand(2, 4, 6, 6, requires_grad=True)
    origins = torch.tensor([[[0, 0], [3, 2]], [[1, 1], [2, 3]]])
    take_windows(x, origins, (3, 3)).sum().backward()
    expected = torch.zeros(2, 6, 6)
    for b, row in enumerate(origins.tolist()):
        for r, c in row:
            expected[b, r:r + 3, c:c + 3] += 1
    torch.testing.assert_close(x.grad, expected[:, None].expand(2, 4, 6, 6))
    # Overlapping windows, against float64 finite differences.
    x64 = torch.rand(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    corners = torch.tensor([[[0, 0], [1, 2], [1, 2]], [[2, 4], [0, 3], [1, 3]]])
    assert torch.autograd.gradcheck(lambda t: take_windows(t, corners, (3, 3)), (x64,))


@pytest.mark.parametrize('kwargs, message', [
    (dict(image_size=448, input_size=224, crop_size=224, patch_size=15), 'image_size'),
    (dict(image_size=448, input_size=220, crop_size=224, patch_size=14), 'input_size'),
    (dict(image_size=224, input_size=224, crop_size=448, patch_size=14), 'crop_size'),
    (dict(image_size=(448, 0), input_size=224, crop_size=224, patch_size=14), 'image_size'),
    (dict(image_size=448, input_size=224, crop_size=224, patch_size=0), 'patch_size'),
])
def test_bad_geometry_is_rejected_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CropGeometry(**kwargs)


def test_windows_outside_the_map_are_rejected():
    with pytest.raises(ValueError, match='origins'):
        take_windows(torch.zeros(1, 1, 4, 4), torch.tensor([[[2, 2]]]), (3, 3))
