"""Joint PCA pictures and PNG panels."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from anyup_neck.visualization import denormalize, pca_rgb, save_panel, to_pil


def test_joint_pca_gives_equal_vectors_equal_colours():
    low = torch.randn(16, 4, 5)
    high = low.repeat_interleave(3, 1).repeat_interleave(3, 2)        # same vectors, 3x larger
    rgb_low, rgb_high = pca_rgb([low, high])
    assert rgb_low.shape == (3, 4, 5) and rgb_high.shape == (3, 12, 15)
    assert rgb_low.min() >= 0 and rgb_low.max() <= 1
    torch.testing.assert_close(rgb_high, rgb_low.repeat_interleave(3, 1).repeat_interleave(3, 2))
    assert rgb_low.std() > 0.1                                        # stretched, not flat


def test_pca_rejects_mixed_widths():
    with pytest.raises(ValueError, match=r'feature_maps: expected one channel count, got \[3, 4\]'):
        pca_rgb([torch.randn(3, 2, 2), torch.randn(4, 2, 2)])


def test_panel_png_has_the_expected_size(tmp_path):
    tiles = [(name, to_pil(torch.rand(3, 4, 6), size=(20, 30))) for name in ('a', 'b', 'c')]
    save_panel(tiles, tmp_path / 'sub' / 'panel.png', label_height=10)
    with Image.open(tmp_path / 'sub' / 'panel.png') as picture:
        assert picture.format == 'PNG' and picture.size == (90, 30)


def test_denormalize_inverts_imagenet_normalisation():
    rgb = torch.rand(3, 5, 5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(denormalize((rgb - mean) / std), rgb)
