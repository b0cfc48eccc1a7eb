"""ResBlock's inference paths (in place, in pieces, pooled; CPU kernels, GPU formulation,
plain ops) equal the plain module."""
from __future__ import annotations

import pytest
import torch

from anyup_neck.ops import fused
from anyup_neck.upsampler import ResBlock
from anyup_neck.upsampler.layers import Encoder, adaptive_pool
from tests.upsampler.paths import PATHS, use_paths


@pytest.fixture(autouse=True)
def _small_pieces(monkeypatch):
    monkeypatch.setattr(fused, 'max_piece_elements', 16 * 10 * 3)  # pieces of 3 rows per image


def _block(in_channels: int, out_channels: int, kernel_size: int = 1) -> ResBlock:
    torch.manual_seed(0)
    block = ResBlock(in_channels, out_channels, kernel_size).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return block


def _map(batch: int, channels: int, channels_last: bool = True) -> torch.Tensor:
    x = torch.randn(batch, channels, 13, 10, dtype=torch.float64)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _expected(block: ResBlock, x: torch.Tensor) -> torch.Tensor:
    return block.block(x) + block.shortcut(x)


@pytest.mark.parametrize('in_channels, out_channels, kernel_size, channels_last', [
    (16, 16, 1, True),    # in pieces, in place
    (16, 16, 1, False),   # NCHW: the whole-map path
    (8, 16, 1, True),     # conv shortcut: the whole-map path
    (16, 16, 3, True),
])
@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('paths', PATHS)
def test_forward_in_place_equals_the_module(in_channels, out_channels, kernel_size,
                                            channels_last, batch, paths, monkeypatch):
    use_paths(monkeypatch, paths)
    block = _block(in_channels, out_channels, kernel_size)
    x = _map(batch, in_channels, channels_last)
    expected = _expected(block, x)
    pieces = []
    in_pieces = fused._residual_in_pieces
    monkeypatch.setattr(fused, '_residual_in_pieces', lambda *a: pieces.append(1) or in_pieces(*a))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
        assert not pieces                                  # x is not the block's to overwrite
        scratch = x.clone()
        got = block(scratch, overwrite=True)
    identity_1x1 = in_channels == out_channels and kernel_size == 1
    assert bool(pieces) == (paths == 'cpu' and channels_last and identity_1x1)
    assert (got.data_ptr() == scratch.data_ptr()) == identity_1x1   # the sum goes into x
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize('in_channels, out_channels, kernel_size', [(16, 16, 1), (8, 16, 1),
                                                                     (16, 16, 3)])
@pytest.mark.parametrize('size', [(4, 5), (7, 3), (13, 10)])   # divides, does not, identity
@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('paths', PATHS)
def test_pooled_equals_pooling_the_output(in_channels, out_channels, kernel_size, size, batch,
                                          paths, monkeypatch):
    use_paths(monkeypatch, paths)
    block = _block(in_channels, out_channels, kernel_size)
    x = _map(batch, in_channels)
    expected = adaptive_pool(_expected(block, x), size)
    with torch.no_grad():
        torch.testing.assert_close(block(x.clone(), pool_to=size, overwrite=True), expected)
    got = block(x.requires_grad_(), pool_to=size)                 # the autograd path
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert x.grad is not None


def test_plain_forward_keeps_its_input():
    block = _block(16, 16)
    x = _map(1, 16)
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(block(x), _expected(block, x))
    torch.testing.assert_close(x, kept)


def test_encoder_inference_equals_the_sequential_modules():
    torch.manual_seed(1)
    first = torch.nn.Conv2d(3, 16, 1, bias=False)
    encoder = Encoder(first, _block(16, 16), _block(16, 16)).double()
    image = torch.randn(2, 3, 13, 10, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    expected = image
    for module in encoder:
        expected = _expected(module, expected) if isinstance(module, ResBlock) else module(expected)
    with torch.no_grad():
        torch.testing.assert_close(encoder(image), expected)
        torch.testing.assert_close(encoder(image, pool_to=(5, 4)),
                                   adaptive_pool(expected, (5, 4)))
    assert list(encoder.state_dict()) == list(torch.nn.Sequential(*encoder).state_dict())


def test_encoder_without_blocks_pools_its_first_layer():
    first = torch.nn.Conv2d(3, 16, 1, bias=False).double()
    image = torch.randn(1, 3, 13, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(Encoder(first)(image, pool_to=(5, 4)),
                                   adaptive_pool(first(image), (5, 4)))
