"""Quality metrics for upsampled features: fidelity to known high-resolution features, and
segmentation scores from a confusion matrix."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_fidelity(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean per-pixel cosine similarity and mean squared error of (B, C, H, W) maps."""
    if pred.shape != target.shape:
        raise ValueError(f'pred: expected the target shape {tuple(target.shape)}, '
                         f'got {tuple(pred.shape)}')
    cosine = F.cosine_similarity(pred.float(), target.float(), dim=1).mean().item()
    mse = (pred.float() - target.float()).pow(2).mean().item()
    return dict(cosine=cosine, mse=mse)


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose label is ``ignore_index`` are left out.
    """
    if pred.shape != label.shape:
        raise ValueError(f'pred: expected the label shape {tuple(label.shape)}, '
                         f'got {tuple(pred.shape)}')
    keep = label != ignore_index
    label, pred = label[keep].long(), pred[keep].long()
    if label.numel() and (label.min() < 0 or label.max() >= num_classes):
        raise ValueError(f'label: expected classes in [0, {num_classes}) or {ignore_index}, '
                         f'got values in [{label.min().item()}, {label.max().item()}]')
    return torch.bincount(label * num_classes + pred,
                          minlength=num_classes ** 2).view(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU (over classes present in the ground truth or the prediction) and pixel accuracy,
    both in percent, as mmseg's IoUMetric reports them."""
    confusion = confusion.double()
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    iou = hits[present] / union[present]
    return dict(mIoU=100 * iou.mean().item(), aAcc=100 * (hits.sum() / confusion.sum()).item())
