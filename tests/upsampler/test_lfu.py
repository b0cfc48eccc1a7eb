"""The two LFU modes: the official regrouping rule and the paper's channel-order invariance."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyup_neck.ops import fused
from anyup_neck.upsampler import LearnedFeatureUnification
from tests.upsampler.paths import use_paths


def _responses_by_hand(feats, basis):
    """r[i, j] = (feats[i] * basis[j]) / in-image taps, by explicit loops (B = 1)."""
    _, C, h, w = feats.shape
    M, _, k, _ = basis.shape
    p = k // 2
    out = torch.zeros(C, M, h, w, dtype=feats.dtype)
    padded = F.pad(feats[0], (p, p, p, p))
    for y in range(h):
        for x in range(w):
            taps = (min(y + p, h - 1) - max(y - p, 0) + 1) * (min(x + p, w - 1) - max(x - p, 0) + 1)
            window = padded[:, y:y + k, x:x + k]                      # (C, k, k)
            out[:, :, y, x] = torch.einsum('cab,mab->cm', window, basis[:, 0]) / taps
    return out


def test_official_mode_follows_the_regrouping_rule():
    torch.manual_seed(1)
    C, M = 3, 4
    lfu = LearnedFeatureUnification(M, 3, mode='official').double()
    feats = torch.randn(1, C, 5, 4, dtype=torch.float64)
    r = _responses_by_hand(feats, lfu.basis.detach())                # (C, M, h, w)
    flat = r.reshape(C * M, 5, 4)                                     # index i*M + j
    expected = torch.zeros(M, 5, 4, dtype=torch.float64)
    for col in range(C):
        column = torch.stack([flat[m * C + col] for m in range(M)])  # (M, h, w)
        expected += column.softmax(dim=0) / C
    torch.testing.assert_close(lfu(feats)[0], expected)


def test_paper_mode_softmaxes_each_channels_basis():
    torch.manual_seed(2)
    lfu = LearnedFeatureUnification(6, 5, mode='paper').double()
    feats = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    r = _responses_by_hand(feats, lfu.basis.detach())
    torch.testing.assert_close(lfu(feats)[0], r.softmax(dim=1).mean(dim=0))


def test_paper_mode_is_invariant_to_channel_order_official_is_not():
    torch.manual_seed(3)
    feats = torch.randn(2, 10, 6, 6, dtype=torch.float64)
    perm = torch.randperm(10)
    paper = LearnedFeatureUnification(8, 5, mode='paper').double()
    official = LearnedFeatureUnification(8, 5, mode='official').double()
    official.load_state_dict(paper.state_dict())
    torch.testing.assert_close(paper(feats[:, perm]), paper(feats))
    assert not torch.allclose(official(feats[:, perm]), official(feats), atol=1e-6)


@pytest.mark.parametrize('mode', ['official', 'paper'])
def test_row_blocks_equal_one_shot(mode, monkeypatch):
    """Without the CPU kernel and without autograd, the responses go in blocks of rows (here 2
    of 7 rows, the last one short; each block's convolution reads 2 rows either side); under
    autograd one block. The result must not depend on it."""
    torch.manual_seed(4)
    lfu = LearnedFeatureUnification(16, 5, mode=mode).double()
    feats = torch.randn(1, 1536, 7, 5, dtype=torch.float64)
    whole = lfu(feats)                                                # autograd: one block
    small = LearnedFeatureUnification(16, 5, mode=mode).double()
    small.load_state_dict(lfu.state_dict())
    use_paths(monkeypatch, 'pytorch')
    monkeypatch.setattr(fused, 'max_piece_elements', 16 * 1536 * 5 * 2)   # 2 rows per block
    with torch.no_grad():
        torch.testing.assert_close(small(feats), whole.detach(), rtol=1e-12, atol=1e-12)
