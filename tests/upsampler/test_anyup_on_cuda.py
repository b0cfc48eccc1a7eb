"""AnyUp on CUDA against the float64 model on the CPU: float32 (TF32 off) forward and gradients,
and the forward under bfloat16 and float16 autocast. Skipped without a GPU.

Errors are measured relative to the scale of the reference (max |got - expected| / max
|expected|), on odd shapes: non-square, output smaller than the image, C = 1 and 1536, batch 2.
Parameter gradients are sums over every pixel with cancellation (e.g. a GroupNorm weight's),
so float32 leaves them at up to a few 1e-4 of their scale (the CPU's float32 does the same).
"""
from __future__ import annotations

import copy

import pytest
import torch

from anyup_neck.ops import fused
from tests.conftest import randomized_anyup
from tests.numerics import relative_error

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

#: (batch, channels, image (H, W), features (h, w), output size or None for the image size)
CASES = [
    (2, 384, (64, 48), (8, 6), None),
    (1, 1, (40, 56), (5, 7), (23, 31)),
    (1, 1536, (32, 24), (4, 3), (32, 24)),
]
CASE_IDS = ['b2-c384-64x48', 'c1-smaller-output', 'c1536']
#: Scale-relative tolerance of the autocast forward: bfloat16 keeps 8 mantissa bits (unit
#: roundoff 3.9e-3), float16 11 bits (4.9e-4); statistics and softmax stay in float32.
AUTOCAST_TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2}
#: How the model runs: (attention backend, fused.use_cuda_kernels). The defaults, then the
#: kernels not yet measured on a GPU (the tiled attention; the fused primitives' kernels).
SETUPS = {'defaults': ('auto', False), 'fused-kernels': ('auto', True),
          'cuda-tiled': ('cuda_tiled', False)}


@pytest.fixture(params=list(SETUPS))
def on_gpu_model(request, monkeypatch):
    """Makes the CUDA copy of a reference model for one of SETUPS."""
    backend, kernels = SETUPS[request.param]
    monkeypatch.setattr(fused, 'use_cuda_kernels', kernels)

    def make(reference: torch.nn.Module) -> torch.nn.Module:
        model = copy.deepcopy(reference).float().cuda()
        model.backend = backend
        return model
    return make


def case_inputs(batch, channels, image_size, feature_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, *image_size, generator=g, dtype=torch.float64)
    features = torch.randn(batch, channels, *feature_size, generator=g, dtype=torch.float64)
    return image, features


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_float32_forward_and_gradients_match_float64_on_the_cpu(case, no_tf32, on_gpu_model):
    batch, channels, image_size, feature_size, output_size = case
    reference = randomized_anyup(seed=1)
    on_gpu = on_gpu_model(reference)
    image, features = case_inputs(batch, channels, image_size, feature_size)
    size = output_size or image_size
    grad_out = torch.randn(batch, channels, *size, dtype=torch.float64)

    features64 = features.clone().requires_grad_()
    expected = reference(image, features64, output_size)
    expected.backward(grad_out)
    features32 = features.float().cuda().requires_grad_()
    got = on_gpu(image.float().cuda(), features32, output_size)
    assert got.device.type == 'cuda' and got.dtype == torch.float32
    got.backward(grad_out.float().cuda())

    assert relative_error(got, expected) < 1e-5
    assert relative_error(features32.grad, features64.grad) < 1e-4
    parameters = dict(on_gpu.named_parameters())
    for name, p in reference.named_parameters():
        if p.grad is not None:
            assert relative_error(parameters[name].grad, p.grad) < 1e-3, name
        else:
            assert parameters[name].grad is None, name


@pytest.mark.parametrize('dtype', list(AUTOCAST_TOLERANCE), ids=str)
@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_autocast_forward_matches_float64_on_the_cpu(case, dtype, on_gpu_model):
    batch, channels, image_size, feature_size, output_size = case
    reference = randomized_anyup(seed=2)
    on_gpu = on_gpu_model(reference)
    image, features = case_inputs(batch, channels, image_size, feature_size, seed=1)
    with torch.no_grad():
        expected = reference(image, features, output_size)
        with torch.autocast('cuda', dtype=dtype):
            got = on_gpu(image.float().cuda(), features.float().cuda(), output_size)
    assert got.dtype == torch.float32                         # the features' dtype
    assert torch.isfinite(got).all()
    assert relative_error(got, expected) < AUTOCAST_TOLERANCE[dtype]
