"""The procedural demo data: deterministic scenes in the real ADE20K / NYUv2 layouts."""
import json

import numpy as np
from mmseg.datasets.transforms import LoadDepthAnnotation
from PIL import Image

from anyup_neck.mm.datasets import CLASSES, render_scene, write_demo_datasets


def test_scenes_are_deterministic_and_labelled():
    a = render_scene(np.random.default_rng(3), 48)
    b = render_scene(np.random.default_rng(3), 48)
    c = render_scene(np.random.default_rng(4), 48)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    image, label, depth = a
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(1, len(CLASSES) + 1)) and 1 in label
    assert depth.dtype == np.float32 and (depth > 0.5).all() and (depth < 10).all()


def test_layouts_depth_encoding_and_generate_once(tmp_path):
    assert write_demo_datasets(str(tmp_path), num_train=2, num_val=1, size=24, seed=1,
                               log=lambda _: None)
    for folder, count in [('ade/images/training', 2), ('ade/annotations/training', 2),
                          ('ade/images/validation', 1), ('ade/annotations/validation', 1),
                          ('nyu/images/train', 2), ('nyu/annotations/train', 2),
                          ('nyu/images/test', 1), ('nyu/annotations/test', 1)]:
        assert len(list((tmp_path / folder).iterdir())) == count, folder
    ade = np.array(Image.open(tmp_path / 'ade/annotations/training/shapes_00000.png'))
    assert ade.dtype == np.uint8
    # mmseg's own loader reads the depth PNG back in metres
    loaded = LoadDepthAnnotation(depth_rescale_factor=1e-3).transform(
        dict(depth_map_path=str(tmp_path / 'nyu/annotations/train/shapes_00000.png'),
             seg_fields=[]))
    expected = render_scene(np.random.default_rng(1), 24)[2]
    np.testing.assert_allclose(loaded['gt_depth_map'], expected, atol=6e-4)

    assert not write_demo_datasets(str(tmp_path), num_train=2, num_val=1, size=24, seed=1,
                                   log=lambda _: None)  # already there
    assert write_demo_datasets(str(tmp_path), num_train=1, num_val=1, size=24, seed=1,
                               log=lambda _: None)  # different request: replaced
    assert json.loads((tmp_path / 'dataset.json').read_text())['num_train'] == 1
    assert len(list((tmp_path / 'ade/images/training').iterdir())) == 1
