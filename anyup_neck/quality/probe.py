"""Linear probes: a 1x1 classifier fitted on frozen features, as in the papers' probing."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                     seed: int = 0) -> torch.nn.Linear:
    """Softmax regression on (N, C) feature vectors with (N,) class indices.

    Full-batch Adam on standardised inputs (the standardisation is folded into the returned
    layer), so the result does not depend on the features' scale. Deterministic for a seed.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f'features, labels: expected (N, C) and (N,), got '
                         f'{tuple(features.shape)} and {tuple(labels.shape)}')
    generator = torch.Generator().manual_seed(seed)
    x = features.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    layer = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.01)
        layer.bias.zero_()
    optimiser = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(layer(x), labels.long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():                      # fold the standardisation into the layer
        layer.weight.div_(std)
        layer.bias.sub_(layer.weight @ mean)
    return layer.requires_grad_(False)


def predict_map(probe: torch.nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) features -> (B, H, W) predicted classes."""
    logits = torch.einsum('bchw,kc->bkhw', features.float(), probe.weight)
    return (logits + probe.bias.view(1, -1, 1, 1)).argmax(dim=1)
