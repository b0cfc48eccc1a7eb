"""AnyUp under torch.autocast: convolutions in the reduced type, statistics (norms, softmax) in
float32, the output in the features' dtype; close to the float64 official formulation.

On the CPU autocast sends the maps through the primitives' GPU formulations (the compiled CPU
kernels take float32/float64 only), so these tests also cover what runs on CUDA under
autocast. Errors are relative to the reference's scale (max |got - expected| / max |expected|).
"""
from __future__ import annotations

import pytest
import torch

from anyup_neck.upsampler.official import official_anyup
from tests.conftest import randomized_anyup
from tests.numerics import relative_error
from tests.upsampler.paths import use_paths

#: bfloat16 keeps 8 significant bits (unit roundoff 3.9e-3), float16 11 (4.9e-4); a few
#: layers of rounding on top
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 1e-2}
ARCH = dict(qk_dim=32, lfu_basis=16, num_heads=2)


def _case(batch: int, channels: int, image: tuple, feats: tuple, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, *image, generator=g),
            torch.randn(batch, channels, *feats, generator=g))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('batch, channels, image_size, feature_size, output_size', [
    (2, 7, (24, 20), (3, 4), (17, 23)),       # batch 2, non-square, odd output
    (1, 1, (16, 16), (4, 4), (9, 5)),         # one channel, output smaller than the image
    (1, 384, (28, 28), (2, 2), None),         # ViT width
])
def test_autocast_forward_matches_float64(dtype, batch, channels, image_size, feature_size,
                                          output_size):
    model = randomized_anyup(dtype=torch.float32, **ARCH)
    image, features = _case(batch, channels, image_size, feature_size)
    size = output_size or image_size
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        got = model(image, features, output_size=size)
    assert got.dtype == features.dtype and got.shape == (batch, channels, *size)
    sd64 = {k: v.double() for k, v in model.state_dict().items()}
    expected = official_anyup(sd64, image.double(), features.double(), size, num_heads=2)
    assert relative_error(got, expected) < TOLERANCE[dtype]


def test_autocast_keeps_float64_features_float64():
    model = randomized_anyup(dtype=torch.float32, **ARCH)
    image, features = _case(1, 5, (16, 12), (2, 3))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert model(image, features.double()).dtype == torch.float64


@pytest.mark.parametrize('paths', ['cpu', 'gpu'])
def test_autocast_training_step_gives_gradients_close_to_float32(paths, monkeypatch):
    """Mixed-precision training: every used parameter gets a finite gradient pointing where the
    float32 one points."""
    use_paths(monkeypatch, paths)
    image, features = _case(2, 6, (20, 16), (4, 4))
    grads = {}
    for precision in ('float32', 'bfloat16'):
        model = randomized_anyup(dtype=torch.float32, **ARCH).train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bfloat16'):
            out = model(image, features)
        assert out.dtype == torch.float32
        out.square().mean().backward()
        grads[precision] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads['float32'].keys() == grads['bfloat16'].keys()
    for name, exact in grads['float32'].items():
        reduced = grads['bfloat16'][name]
        assert torch.isfinite(reduced).all(), name
        cosine = torch.nn.functional.cosine_similarity(reduced.flatten(), exact.flatten(), dim=0)
        assert cosine > 0.95, (name, float(cosine))
