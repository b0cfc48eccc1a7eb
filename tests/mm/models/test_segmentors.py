"""AnyUpEncoderDecoder / AnyUpDepthEstimator: image to the neck, freezing, inference modes,
build-time checks."""
import copy

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS
from torch._subclasses.fake_tensor import FakeTensorMode

from tests.host_waits import HostWaits

from .. import helpers
from ..helpers import TINY_ANYUP

SEGMENTOR = dict(
    type='AnyUpEncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                           bgr_to_rgb=True, size=(32, 32)),
    backbone=dict(type='TimmBackbone', model_name='vit_tiny_patch16_224',
                  model_kwargs=dict(patch_size=8, depth=2, img_size=32)),
    neck=dict(type='AnyUpNeck', upsampler=TINY_ANYUP),
    decode_head=dict(type='LinearHead', in_channels=192, num_classes=3),
    test_cfg=dict(mode='whole'))


def build(edit=None, **top):
    cfg = copy.deepcopy(SEGMENTOR)
    cfg.update(top)
    if edit is not None:
        edit(cfg)
    return MODELS.build(ConfigDict(cfg))


def test_plain_encoder_decoder_with_anyup_neck_says_to_use_ours():
    model = build(type='EncoderDecoder')
    with pytest.raises(TypeError, match="use type='AnyUpEncoderDecoder'.*not mmseg's "
                                        "EncoderDecoder"):
        model(torch.randn(1, 3, 32, 32), mode='tensor')


def test_neck_normalisation_comes_from_the_data_preprocessor():
    model = build()
    image = torch.rand(1, 3, 8, 8) * 255
    normalised = (image - 127.5) / 127.5
    imagenet = (image / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model.neck.guidance(normalised), imagenet)


def test_whole_and_slide_inference():
    model = build().eval()
    image = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        whole = model.inference(image, [dict(ori_shape=(48, 40), img_shape=(48, 40),
                                              pad_shape=(48, 40))])
        model.test_cfg = ConfigDict(mode='slide', crop_size=(48, 40), stride=(16, 16))
        one_window = model.inference(image, [dict(ori_shape=(48, 40), img_shape=(48, 40))])
        model.test_cfg = ConfigDict(mode='slide', crop_size=(32, 32), stride=(16, 8))
        windows = []
        model.neck.register_forward_pre_hook(lambda m, args: windows.append(args[1].shape[-2:]))
        slid = model.inference(image, [dict(ori_shape=(48, 40), img_shape=(48, 40))])
    torch.testing.assert_close(one_window, whole)
    assert slid.shape == whole.shape == (1, 3, 48, 40)
    assert len(windows) == 2 * 2 and all(tuple(w) == (32, 32) for w in windows)  # neck saw crops


def test_depth_estimator_slide_mode_slides():
    def depth(cfg):
        cfg['decode_head'] = dict(type='DPTDepthHead', in_channels=[192] * 2, in_index=[0, 1],
                                  reassemble_channels=(8, 16), channels=8, norm_cfg=None)
        cfg['neck'].update(in_index=(0, 1), out_strides=(4, 8))
        cfg['backbone']['out_indices'] = (0, 1)
    model = build(depth, type='AnyUpDepthEstimator',
                  test_cfg=dict(mode='slide', crop_size=(32, 32), stride=(16, 16))).eval()
    windows = []
    model.neck.register_forward_pre_hook(lambda m, args: windows.append(args[1].shape[-2:]))
    with torch.no_grad():
        out = model.inference(torch.randn(1, 3, 48, 32), [dict(ori_shape=(48, 32),
                                                                img_shape=(48, 32))])
    assert out.shape == (1, 1, 48, 32) and ((out > 0) & (out < 10)).all()
    assert [tuple(w) for w in windows] == [(32, 32), (32, 32)]  # mmseg 1.2.2 ran whole too


def test_freeze_backbone_keeps_it_out_of_training_and_of_the_optimizer():
    model = build(freeze_backbone=True)
    model.train()
    assert not model.backbone.training and model.decode_head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    wrapper = build_optim_wrapper(model, dict(
        constructor='TrainableParamsOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01)))
    optimised = {id(p) for group in wrapper.optimizer.param_groups for p in group['params']}
    assert optimised == {id(p) for p in model.decode_head.parameters()}
    out = model(torch.randn(2, 3, 32, 32), mode='tensor')
    out.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize('edit, error, message', [
    (lambda c: c['backbone'].update(model_name='vit_tiny_patch16_2244'), ValueError,
     r"model_name: expected a timm model name .*got 'vit_tiny_patch16_2244'"),
    (lambda c: c['neck'].update(in_index=(0, 1)), ValueError,
     r'in_index: expected indices in \[-1, 1\) \(the backbone gives 1 feature maps\), '
     r'got \(0, 1\)'),
    (lambda c: c['neck'].update(out_strides=(3,)), ValueError,
     r'neck.out_strides: 3 does not divide the crop size \(32, 32\)'),
    (lambda c: c['data_preprocessor'].update(size=(36, 36)), ValueError,
     r'backbone patch size / stride: 8 does not divide the crop size \(36, 36\)'),
    (lambda c: c['decode_head'].update(in_channels=384), ValueError,
     r'decode_head.in_channels: expected 192 \(the channels of backbone levels \[-1\] '
     r'through the neck\), got 384'),
    (lambda c: c['neck'].update(init_cfg=dict(type='Pretrained', checkpoint='no/such.pth')),
     FileNotFoundError, r"init_cfg.checkpoint: .*got 'no/such.pth' \(no such file\)"),
], ids=['unknown backbone', 'in_index out of range', 'stride does not divide',
        'patch does not divide', 'head channels', 'missing checkpoint'])
def test_bad_configs_fail_at_build_time(edit, error, message):
    with pytest.raises(error, match=message):
        build(edit)


@pytest.mark.parametrize('config', [helpers.SEGMENTOR, helpers.DEPTH], ids=['seg', 'depth'])
def test_gpu_forward_never_waits(config):
    """On fake CUDA tensors (tests/host_waits.py): backbone, AnyUp neck and head queue their
    kernels without a value crossing between host and device."""
    model = MODELS.build(ConfigDict(config))
    with FakeTensorMode(allow_non_fake_inputs=True), torch.device('cuda'):
        model = model.cuda()
        with HostWaits() as waits:
            out = model._forward(torch.randn(2, 3, *helpers.IMAGE))
    assert out.shape[0] == 2 and out.device.type == 'cuda'
    assert waits.found == []
