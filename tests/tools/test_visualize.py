"""tools/visualize.py writes valid PNGs of the expected size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import visualize  # tools/, on sys.path through conftest.py

BACKBONE = ['--backbone', 'vit_tiny_patch16_224', '--backbone-kwargs',
            '{"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}']


def test_feature_and_attention_panels(tmp_path):
    written = visualize.main(['--image-size', '48', '--attention-pixel', '10', '30',
                              '--out-dir', str(tmp_path), *BACKBONE])
    assert [Path(p).name for p in written] == ['scene_0_features.png', 'scene_0_attention.png']
    with Image.open(written[0]) as panel:        # image, low-res PCA, 3 methods
        assert panel.format == 'PNG' and panel.size == (5 * 48, 48 + 16)
    with Image.open(written[1]) as panel:        # image, anyup_random's weights
        assert panel.format == 'PNG' and panel.size == (2 * 48, 48 + 16)
        pixels = np.asarray(panel)
    assert pixels[16:].std() > 0                 # not a blank picture


def test_user_image_and_errors(tmp_path):
    photo = tmp_path / 'photo.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8)).save(photo)
    written = visualize.main(['--image', str(photo), '--image-size', '32', '--methods', 'bilinear',
                              '--out-dir', str(tmp_path / 'out'), *BACKBONE])
    assert Path(written[0]).name == 'photo_features.png'
    with pytest.raises(ValueError, match='--attention-pixel: expected at least one AnyUp method'):
        visualize.main(['--image-size', '32', '--methods', 'bilinear', '--attention-pixel', '1',
                        '1', '--out-dir', str(tmp_path), *BACKBONE])
