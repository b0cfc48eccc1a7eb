"""The loss terms against hand-made values and an independent per-pixel computation."""
import math

import numpy as np
import pytest
import torch

from anyup_neck.mm.models.losses import cos_mse, input_consistency_loss, self_consistency_loss


def _cos_mse_reference(pred: np.ndarray, target: np.ndarray) -> float:
    """Pixel by pixel: mean of (1 - a.b / (|a||b|)) plus the mean squared difference."""
    N, C, H, W = pred.shape
    cosines = [1 - pred[n, :, i, j] @ target[n, :, i, j]
               / (np.linalg.norm(pred[n, :, i, j]) * np.linalg.norm(target[n, :, i, j]))
               for n in range(N) for i in range(H) for j in range(W)]
    return float(np.mean(cosines) + np.mean((pred - target) ** 2))


def test_cos_mse_on_hand_made_vectors():
    a = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    assert float(cos_mse(a, a)) == 0.0
    assert float(cos_mse(a, b)) == pytest.approx(1 + (1 + 4) / 2)      # orthogonal
    assert float(cos_mse(a, -a)) == pytest.approx(2 + 4 / 2)           # opposite
    c = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    assert float(cos_mse(a, c)) == pytest.approx(1 - 1 / math.sqrt(2) + 1 / 2)  # 45 degrees


def test_cos_mse_matches_a_per_pixel_reference():
    pred, target = torch.randn(3, 5, 4, 6), torch.randn(3, 5, 4, 6)
    assert float(cos_mse(pred, target)) == pytest.approx(
        _cos_mse_reference(pred.numpy(), target.numpy()), rel=1e-5)
    per_sample = cos_mse(pred, target, reduction='none')
    assert per_sample.shape == (3,)
    for n in range(3):
        assert float(per_sample[n]) == pytest.approx(
            _cos_mse_reference(pred[n:n + 1].numpy(), target[n:n + 1].numpy()), rel=1e-5)


def test_cos_mse_computes_in_float32():
    pred, target = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    low = cos_mse(pred.bfloat16(), target.bfloat16())
    assert low.dtype == torch.float32
    assert float(low) == pytest.approx(float(cos_mse(pred.bfloat16().float(),
                                                     target.bfloat16().float())))


def test_self_consistency_is_cos_mse_with_a_detached_target():
    augmented = torch.randn(2, 4, 5, 5, requires_grad=True)
    clean = torch.randn(2, 4, 5, 5, requires_grad=True)
    loss = self_consistency_loss(augmented, clean)
    assert float(loss.detach()) == pytest.approx(
        _cos_mse_reference(augmented.detach().numpy(), clean.detach().numpy()), rel=1e-5)
    loss.backward()
    assert clean.grad is None and augmented.grad is not None


def test_input_consistency_compares_block_means_with_the_input():
    upsampled = torch.randn(2, 3, 6, 4)                    # 2x the 3 x 2 input grid
    features = torch.randn(2, 3, 3, 2)
    blocks = upsampled.numpy().reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5))
    assert float(input_consistency_loss(upsampled, features)) == pytest.approx(
        _cos_mse_reference(blocks, features.numpy()), rel=1e-5)
    # An upsampling whose block means reproduce the input costs nothing.
    exact = features.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert float(input_consistency_loss(exact, features)) == pytest.approx(0, abs=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='target'):
        cos_mse(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match='reduction'):
        cos_mse(torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3), reduction='sum')
