"""Metrics on hand-made cases, and agreement with mmseg's own IoU computation."""
from __future__ import annotations

import pytest
import torch

from anyup_neck.quality import (confusion_matrix, feature_fidelity, fit_linear_probe,
                                predict_map, segmentation_scores)


def test_identical_features_have_cosine_one_and_zero_error():
    x = torch.randn(2, 7, 5, 3)
    scores = feature_fidelity(x, x.clone())
    assert scores['cosine'] == pytest.approx(1.0, abs=1e-6) and scores['mse'] == 0.0


def test_fidelity_of_known_pairs():
    a = torch.zeros(1, 2, 1, 2)
    a[0, 0] = 1.0                                  # both pixels (1, 0)
    b = a.clone()
    b[0, :, 0, 1] = torch.tensor([0.0, 2.0])       # second pixel (0, 2): orthogonal
    scores = feature_fidelity(b, a)
    assert scores['cosine'] == pytest.approx(0.5)
    assert scores['mse'] == pytest.approx((1 + 4) / 4)


def test_known_confusion_gives_known_miou():
    label = torch.tensor([0, 0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    conf = confusion_matrix(pred, label, 3)
    assert conf.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = segmentation_scores(conf)
    # IoU: class 0 = 2/3, class 1 = 1/(2+2-1) = 1/3, class 2 = 1/2
    assert scores['mIoU'] == pytest.approx(100 * (2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert scores['aAcc'] == pytest.approx(100 * 4 / 6)


def test_miou_agrees_with_mmseg():
    from mmseg.evaluation.metrics import IoUMetric
    torch.manual_seed(0)
    label = torch.randint(0, 5, (40, 40))
    label[:3] = 255
    pred = torch.where(torch.rand(40, 40) < 0.7, label.clamp(max=4), torch.randint(0, 5, (40, 40)))
    ours = segmentation_scores(confusion_matrix(pred, label, 5))
    inter, union, pred_area, label_area = IoUMetric.intersect_and_union(pred, label, 5, 255)
    theirs = IoUMetric.total_area_to_metrics(inter, union, pred_area, label_area, ['mIoU'])
    assert ours['mIoU'] == pytest.approx(100 * float(theirs['IoU'].mean()), rel=1e-6)
    assert ours['aAcc'] == pytest.approx(100 * float(theirs['aAcc']), rel=1e-6)


def test_bad_labels_are_named():
    with pytest.raises(ValueError, match=r'label: expected classes in \[0, 3\) or 255, got values in \[0, 7\]'):
        confusion_matrix(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 7, 2]), 3)


def test_probe_separates_separable_classes():
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 4
    labels = torch.randint(0, 3, (600,))
    feats = centres[labels] + torch.randn(600, 16) * 0.5 + 10.0       # offset: scale-proof
    probe = fit_linear_probe(feats, labels, 3, steps=200)
    maps = feats.t().reshape(1, 16, 20, 30)
    assert (predict_map(probe, maps).flatten() == labels).float().mean() > 0.99
