"""The module is trainable: every parameter that the computation uses receives a gradient."""
from __future__ import annotations

import torch

from tests.conftest import randomized_anyup

# nn.MultiheadAttention holds the q/k projections; its value/output projections are part of
# the official state_dict but never used (values are the raw features).
UNUSED = {'cross_decode.cross_attn.attention.out_proj.weight',
          'cross_decode.cross_attn.attention.out_proj.bias'}


def test_gradients_reach_all_used_parameters():
    model = randomized_anyup(dtype=torch.float32, qk_dim=32, lfu_basis=16, num_heads=4).train()
    image = torch.randn(2, 3, 20, 28)
    feats = torch.randn(2, 6, 4, 5, requires_grad=True)
    out = model(image, feats, output_size=(15, 21))
    (out * torch.randn_like(out)).sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        if name in UNUSED:
            assert p.grad is None, name
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    in_proj = model.cross_decode.cross_attn.attention.in_proj_weight.grad
    assert in_proj[:64].abs().sum() > 0 and in_proj[64:].abs().sum() == 0


def test_a_few_optimiser_steps_fit_a_target():
    """Gradients point somewhere useful: loss on a fixed target drops."""
    model = randomized_anyup(dtype=torch.float32, qk_dim=16, lfu_basis=8, num_heads=2).train()
    image, feats = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 4, 4)
    target = torch.nn.functional.interpolate(feats, size=(16, 16), mode='bicubic')
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (model(image, feats) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
