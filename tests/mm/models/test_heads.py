"""LinearHead, DPTPyramidHead, DPTDepthHead: shapes, losses, mmseg conventions."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample


def samples(key, maps):
    out = []
    for m in maps:
        sample = SegDataSample()
        sample.set_data({key: PixelData(data=m)})
        out.append(sample)
    return out


def test_linear_head_is_norm_plus_1x1_conv():
    head = MODELS.build(dict(type='LinearHead', in_channels=[6, 4], in_index=[0, 1],
                             input_transform='resize_concat', num_classes=3,
                             norm_cfg=dict(type='BN'), dropout_ratio=0.0)).eval()
    features = [torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8)]
    logits = head(features)
    assert logits.shape == (2, 3, 8, 8)
    expected = head.conv_seg(head.norm(torch.cat(features, 1)))
    torch.testing.assert_close(logits, expected)
    assert head.conv_seg.kernel_size == (1, 1) and head.conv_seg.in_channels == 10
    with pytest.raises(TypeError, match='channels is the input width'):
        MODELS.build(dict(type='LinearHead', in_channels=6, channels=6, num_classes=3))


def pyramid(batch=2, channels=(8, 8, 16, 16), size=32):
    return [torch.randn(batch, c, size // s, size // s) for c, s in zip(channels, (4, 8, 16, 32))]


def test_dpt_pyramid_head_segments():
    head = MODELS.build(dict(type='DPTPyramidHead', in_channels=[8, 8, 16, 16],
                             in_index=[0, 1, 2, 3], reassemble_channels=(4, 8, 8, 16),
                             channels=8, num_classes=5, norm_cfg=dict(type='BN')))
    logits = head(pyramid())
    assert logits.shape == (2, 5, 16, 16)  # fused at half the finest stride
    gt = torch.randint(0, 5, (2, 1, 32, 32))
    losses = head.loss_by_feat(logits, samples('gt_sem_seg', gt))
    losses['loss_ce'].backward()
    assert head.decoder.projects[3].conv.weight.grad is not None
    with pytest.raises(ValueError, match=r'reassemble_channels: expected one width per input'):
        MODELS.build(dict(type='DPTPyramidHead', in_channels=[8, 8], in_index=[0, 1],
                          reassemble_channels=(4, 8, 8), channels=8, num_classes=2))


def test_dpt_depth_head_predicts_bounded_metric_depth():
    head = MODELS.build(dict(type='DPTDepthHead', in_channels=[8, 8, 16, 16],
                             in_index=[0, 1, 2, 3], reassemble_channels=(4, 8, 8, 16),
                             channels=8, max_depth=5.0))
    depth = head(pyramid())
    assert depth.shape == (2, 1, 16, 16) and ((depth > 0) & (depth < 5.0)).all()
    gt = torch.rand(2, 1, 32, 32) * 4 + 0.5
    losses = head.loss_by_feat(depth, samples('gt_depth_map', gt))
    assert set(losses) == {'loss_silog'} and losses['loss_silog'].requires_grad
