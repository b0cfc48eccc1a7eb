"""Bad inputs raise ValueError/TypeError naming the argument, the expected and the actual, at
every public entry of AnyUp (one list of cases: :mod:`tests.upsampler.bad_inputs`)."""
from __future__ import annotations

import pytest
import torch

from anyup_neck import AnyUp
from tests.upsampler.bad_inputs import BAD_INPUTS, FEATURES, IMAGE, MODEL_ARGS

MODEL = AnyUp(**MODEL_ARGS).eval()


def _arguments(argument: str, value: object) -> dict:
    """The good image, features and output size with ``argument`` replaced by ``value``."""
    return {'image': IMAGE, 'features': FEATURES, 'output_size': None, argument: value}


@pytest.mark.parametrize('argument, value, error, pattern', BAD_INPUTS)
def test_forward(argument, value, error, pattern):
    a = _arguments(argument, value)
    with pytest.raises(error, match=pattern):
        MODEL(a['image'], a['features'], output_size=a['output_size'])


@pytest.mark.parametrize('argument, value, error, pattern', BAD_INPUTS)
def test_attention_map(argument, value, error, pattern):
    a = _arguments(argument, value)
    with pytest.raises(error, match=pattern):
        MODEL.attention_map(a['image'], a['features'], a['output_size'] or (8, 8), pixel=(1, 1))


@pytest.mark.parametrize('argument, value, error, pattern',
                         [p for p in BAD_INPUTS if p.values[0] == 'image'])
def test_encode_image(argument, value, error, pattern):
    with pytest.raises(error, match=pattern):
        MODEL.encode_image(value)


@pytest.mark.parametrize('argument, value, error, pattern',
                         [p for p in BAD_INPUTS if p.values[0] != 'image'])
def test_upsample(argument, value, error, pattern):
    a = _arguments(argument, value)
    with torch.no_grad():
        encoding = MODEL.encode_image(IMAGE)
    with pytest.raises(error, match=pattern):
        MODEL.upsample(encoding, a['features'], a['output_size'] or (8, 8))


@pytest.mark.parametrize('encoding, error, pattern', [
    (torch.randn(2, 8, 16, 16), ValueError,
     r'encoding: expected shape \(B, 16, H, W\) \(from encode_image\), got \(2, 8, 16, 16\)'),
    (torch.randn(2, 16, 16, 16).double(), TypeError,
     r"encoding: expected dtype torch.float32 \(the model's.* got torch.float64"),
    (torch.randn(2, 16, 16, 16).numpy(), TypeError, 'encoding: expected a torch.Tensor'),
])
def test_upsample_bad_encoding(encoding, error, pattern):
    with pytest.raises(error, match=pattern):
        MODEL.upsample(encoding, FEATURES, (8, 8))


def test_image_in_the_autocast_dtype_is_fine_under_autocast():
    """Autocast casts the convolutions' float32/16 and bfloat16 inputs, not float64 ones."""
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert MODEL(IMAGE.bfloat16(), FEATURES, output_size=4).shape == (2, 4, 4, 4)
        with pytest.raises(TypeError, match='image: expected dtype torch.float32'):
            MODEL(IMAGE.double(), FEATURES)


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(qk_dim=16, num_heads=3), 'num_heads: expected a divisor of qk_dim=16, got 3'),
    (dict(window_ratio=1.5), r'window_ratio: expected a number in \[0, 1\], got 1.5'),
    (dict(lfu_mode='softmax'), "lfu_mode: expected one of .* got 'softmax'"),
    (dict(lfu_kernel_size=4), 'lfu_kernel_size: expected an odd positive int, got 4'),
    (dict(qk_dim=20, num_heads=2), 'qk_dim: expected a positive multiple of 8 .* got 20'),
    (dict(lfu_basis=12), 'lfu_basis: expected a positive multiple of 8 .* got 12'),
])
def test_bad_construction(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        AnyUp(**kwargs)


@pytest.mark.parametrize('set_by', ['constructor', 'attribute'])
def test_unknown_backend_is_named(set_by):
    if set_by == 'constructor':
        model = AnyUp(**MODEL_ARGS, backend='fast')
    else:
        model = AnyUp(**MODEL_ARGS)
        model.backend = 'fast'
    assert model.backend == 'fast' == model.cross_decode.cross_attn.backend
    with pytest.raises(ValueError, match="backend: expected one of .*got 'fast'"):
        model(IMAGE, FEATURES)


def test_int_output_size_means_square():
    with torch.no_grad():
        assert MODEL(IMAGE, FEATURES, output_size=7).shape == (2, 4, 7, 7)
