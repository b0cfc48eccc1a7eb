"""Image-folder dataset and its pipeline: layouts, resize/crop, and every bad input."""
import logging
import os

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from PIL import Image

from anyup_neck.mm.datasets import (ImageFolderDataset, LoadImageRGB, PackImage,
                                    ResizeCoverCrop, SyntheticImageFolder, list_images)

PIPELINE = [dict(type='LoadImageRGB'), dict(type='ResizeCoverCrop', size=32, random_crop=False),
            dict(type='PackImage')]


def _save(path, height, width, seed=0, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


@pytest.fixture
def captured_log():
    """Records that mmengine's current logger emits during the test."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_imagenet_layout_is_listed_recursively_without_labels(tmp_path):
    _save(tmp_path / 'train/n01440764/a.JPEG', 40, 50, fmt='JPEG')
    _save(tmp_path / 'train/n01443537/b.png', 50, 40)
    _save(tmp_path / 'train/n01443537/deeper/c.jpg', 36, 36)
    (tmp_path / 'train/n01443537/readme.txt').write_text('not an image')
    root = str(tmp_path / 'train')
    assert [os.path.relpath(p, root) for p in list_images(root)] == [
        'n01440764/a.JPEG', 'n01443537/b.png', 'n01443537/deeper/c.jpg']
    dataset = ImageFolderDataset(root, pipeline=PIPELINE)
    assert len(dataset) == 3
    item = dataset[1]
    assert set(item) == {'inputs'}
    assert item['inputs'].dtype == torch.uint8 and item['inputs'].shape == (3, 32, 32)


def test_resize_cover_crop_against_pil():
    pixels = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    # Cover 40 x 40: scale max(40/50, 40/100) = 0.8 -> 40 x 80, centre columns 20..59.
    out = ResizeCoverCrop(40, random_crop=False)(dict(img=pixels))['img']
    expected = np.asarray(Image.fromarray(pixels).resize((80, 40), Image.BICUBIC))[:, 20:60]
    np.testing.assert_array_equal(out, expected)
    # A random crop is some window of the same resized image.
    np.random.seed(0)
    crop = ResizeCoverCrop((40, 30), random_crop=True)(dict(img=pixels))['img']
    resized = np.asarray(Image.fromarray(pixels).resize((80, 40), Image.BICUBIC))
    assert crop.shape == (40, 30, 3)
    assert any(np.array_equal(crop, resized[:, x:x + 30]) for x in range(51))
    # Small images are scaled up to cover the size.
    assert ResizeCoverCrop((40, 30))(dict(img=pixels[:10, :20]))['img'].shape == (40, 30, 3)


def test_load_and_pack_give_chw_uint8(tmp_path):
    pixels = _save(str(tmp_path / 'x.png'), 7, 5)
    packed = PackImage()(LoadImageRGB()(dict(img_path=str(tmp_path / 'x.png'))))
    assert torch.equal(packed['inputs'], torch.from_numpy(pixels).permute(2, 0, 1))


def test_missing_and_empty_folders_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match='data_root.*no such directory'):
        ImageFolderDataset(str(tmp_path / 'missing'), pipeline=PIPELINE)
    (tmp_path / 'empty/sub').mkdir(parents=True)
    (tmp_path / 'empty/sub/labels.txt').write_text('1')
    with pytest.raises(ValueError, match='data_root: expected JPEG/PNG files.*found none'):
        ImageFolderDataset(str(tmp_path / 'empty'), pipeline=PIPELINE)


def test_a_folder_of_unreadable_images_is_rejected(tmp_path):
    for name in ('a.jpg', 'b.png', 'c.jpeg'):
        (tmp_path / name).write_bytes(b'definitely not an image')
    with pytest.raises(ValueError, match='data_root: expected readable images.*none of the 3'):
        ImageFolderDataset(str(tmp_path), pipeline=PIPELINE)


def test_images_smaller_than_min_size_are_rejected_before_use(tmp_path):
    _save(str(tmp_path / 'big.png'), 64, 80)
    _save(str(tmp_path / 'small.png'), 64, 20)
    with pytest.raises(ValueError, match=r'min_size: .*at least 32 px.*small.png \(20x64\)'):
        ImageFolderDataset(str(tmp_path), pipeline=PIPELINE, min_size=32)
    assert len(ImageFolderDataset(str(tmp_path), pipeline=PIPELINE, min_size=20)) == 2


def test_a_corrupt_image_is_skipped_with_a_warning(tmp_path, captured_log):
    _save(str(tmp_path / 'a.jpg'), 40, 40, seed=1, fmt='JPEG')
    _save(str(tmp_path / 'b.jpg'), 40, 40, seed=2, fmt='JPEG')
    expected = _save(str(tmp_path / 'c.png'), 32, 32, seed=3)
    data = (tmp_path / 'b.jpg').read_bytes()
    (tmp_path / 'b.jpg').write_bytes(data[:len(data) // 2])      # valid header, truncated
    dataset = ImageFolderDataset(str(tmp_path), pipeline=PIPELINE)
    item = dataset[1]                                           # b.jpg -> c.png instead
    assert torch.equal(item['inputs'], torch.from_numpy(expected).permute(2, 0, 1))
    warnings = [r.getMessage() for r in captured_log if r.levelno == logging.WARNING]
    assert any('skipping an unreadable image' in m and 'b.jpg' in m for m in warnings)


def test_synthetic_folder_writes_once_and_reads_like_any_folder(tmp_path):
    dataset = SyntheticImageFolder(str(tmp_path), num_images=4, image_size=40, seed=3,
                                   pipeline=PIPELINE, min_size=40)
    names = sorted(os.listdir(tmp_path))
    assert len(dataset) == 4 and [n.rsplit('.', 1)[1] for n in names] == ['jpg', 'png'] * 2
    stamps = [os.path.getmtime(tmp_path / n) for n in names]
    again = SyntheticImageFolder(str(tmp_path), num_images=4, image_size=40, seed=3,
                                 pipeline=PIPELINE)
    assert [os.path.getmtime(tmp_path / n) for n in names] == stamps
    assert torch.equal(dataset[2]['inputs'], again[2]['inputs'])


@pytest.mark.parametrize('kwargs, name', [(dict(min_size=-1), 'min_size'),
                                          (dict(probe=0), 'probe')])
def test_bad_arguments_are_named(tmp_path, kwargs, name):
    _save(str(tmp_path / 'a.png'), 8, 8)
    with pytest.raises(ValueError, match=name):
        ImageFolderDataset(str(tmp_path), pipeline=PIPELINE, **kwargs)
