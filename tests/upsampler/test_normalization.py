"""AnyUp's guidance normalisation: ImageNet mean/std per channel, any batch shape, bad input."""
import re

import pytest
import torch

from anyup_neck.upsampler import (IMAGENET_MEAN, IMAGENET_STD, ChannelNormalisation,
                                  imagenet_normalise)


def test_imagenet_normalise_per_channel_any_leading_shape():
    images = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    normalised = imagenet_normalise(images)
    assert normalised.dtype == torch.float64 and normalised.shape == images.shape
    for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        torch.testing.assert_close(normalised[:, c], (images[:, c] - m) / s)
    torch.testing.assert_close(imagenet_normalise(images[0]), normalised[0])
    assert (IMAGENET_MEAN, IMAGENET_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_channel_normalisation_module_moves_with_the_model_and_saves_nothing(dtype):
    module = ChannelNormalisation(IMAGENET_MEAN, IMAGENET_STD)
    assert module.state_dict() == {}
    images = torch.rand(2, 3, 5, 4, dtype=dtype)
    assert torch.equal(module(images), imagenet_normalise(images))
    on_meta = module.to('meta')
    assert on_meta.mean.device.type == 'meta' and on_meta(images.to('meta')).dtype == dtype


@pytest.mark.parametrize('shape', [(2, 4, 5, 5), (5, 5)])
def test_non_rgb_input_is_named(shape):
    message = f'images: expected RGB images (..., 3, H, W), got shape {shape}'
    with pytest.raises(ValueError, match=re.escape(message)):
        imagenet_normalise(torch.zeros(shape))
