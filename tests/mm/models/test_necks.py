"""AnyUpNeck and BilinearNeck: outputs, guidance normalisation, weights, freezing, errors."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from anyup_neck.upsampler import IMAGENET_MEAN, IMAGENET_STD

from ..helpers import TINY_ANYUP

CLIP_MEAN = (122.77, 116.75, 104.09)
CLIP_STD = (68.50, 66.63, 70.32)


def anyup_neck(**kwargs):
    kwargs.setdefault('upsampler', dict(TINY_ANYUP))
    return MODELS.build(dict(type='AnyUpNeck', **kwargs))


def normalise(image01, mean, std):
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (image01 * 255 - mean) / std


def test_outputs_match_anyup_with_imagenet_guidance_and_share_one_encoding():
    neck = anyup_neck(in_index=(0, 1), out_strides=(1,), image_mean=CLIP_MEAN,
                      image_std=CLIP_STD)
    image01 = torch.rand(2, 3, 32, 24)
    levels = (torch.randn(2, 8, 4, 3), torch.randn(2, 5, 2, 2))
    calls = []
    neck.upsampler.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    out = neck(levels, normalise(image01, CLIP_MEAN, CLIP_STD))
    assert len(calls) == 1  # one image encoding for both levels
    reference = neck.upsampler
    imagenet = (image01 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for got, level in zip(out, levels):
        torch.testing.assert_close(got, reference(imagenet, level, (32, 24)),
                                   atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('in_index, out_strides, expected', [
    (-1, (4, 8, 16, 32), [(16, 12), (8, 6), (4, 3), (2, 2)]),  # ceil(24 / 16) = 2
    ((0, 1), (2,), [(32, 24), (32, 24)]),
    ((0, 1), (1, 2), [(64, 48), (32, 24)]),
])
def test_level_and_stride_pairing(in_index, out_strides, expected):
    neck = MODELS.build(dict(type='BilinearNeck', in_index=in_index, out_strides=out_strides))
    out = neck((torch.randn(1, 4, 8, 6), torch.randn(1, 6, 4, 3)), torch.randn(1, 3, 64, 48))
    assert [tuple(o.shape[-2:]) for o in out] == expected


@pytest.mark.parametrize('mode', ['bilinear', 'bicubic', 'nearest'])
def test_bilinear_neck_is_plain_interpolation(mode):
    neck = MODELS.build(dict(type='BilinearNeck', mode=mode))
    features = torch.randn(2, 7, 4, 4)
    kwargs = {} if mode == 'nearest' else dict(align_corners=False)
    expected = F.interpolate(features, size=(16, 16), mode=mode, **kwargs)
    torch.testing.assert_close(neck((features,), torch.randn(2, 3, 16, 16))[0], expected)


def test_frozen_by_default_but_gradients_reach_the_features():
    neck = anyup_neck(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    neck.train()
    assert not neck.upsampler.training
    assert not any(p.requires_grad for p in neck.parameters())
    features = torch.randn(1, 6, 4, 4, requires_grad=True)
    neck((features,), torch.randn(1, 3, 16, 16))[0].sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    trainable = anyup_neck(frozen=False, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    assert all(p.requires_grad for p in trainable.parameters())


def test_init_cfg_loads_official_format_strictly(tmp_path, anyup_checkpoint):
    neck = anyup_neck(init_cfg=dict(type='Pretrained', checkpoint=str(anyup_checkpoint)))
    neck.init_weights()
    state = torch.load(anyup_checkpoint)
    for key, value in neck.upsampler.state_dict().items():
        torch.testing.assert_close(value, state[key])

    # a training checkpoint holding the upsampler under a prefix
    wrapped = tmp_path / 'wrapped.pth'
    torch.save({'state_dict': {f'neck.upsampler.{k}': v for k, v in state.items()}}, wrapped)
    neck = anyup_neck(init_cfg=dict(type='Pretrained', checkpoint=str(wrapped),
                                    prefix='neck.upsampler.'))
    neck.init_weights()
    torch.testing.assert_close(neck.upsampler.rope.freqs, state['rope.freqs'])

    # checkpoint=None: random weights (what the demo configs use)
    assert anyup_neck(init_cfg=dict(type='Pretrained', checkpoint=None)).checkpoint is None

    # an architecture that does not fit the file: every mismatch is reported
    neck = anyup_neck(upsampler=dict(qk_dim=32, num_heads=4, lfu_basis=8),
                      init_cfg=dict(type='Pretrained', checkpoint=str(anyup_checkpoint)))
    with pytest.raises(ValueError, match='shape mismatches'):
        neck.init_weights()


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(init_cfg=dict(type='Pretrained', checkpoint='nowhere/anyup.pth')), FileNotFoundError,
     r"init_cfg.checkpoint: expected an AnyUp checkpoint file or URL, got 'nowhere/anyup.pth'"),
    (dict(init_cfg=dict(type='Kaiming')), ValueError,
     r"init_cfg: expected dict\(type='Pretrained'"),
    (dict(in_index=(0, 1), out_strides=(1, 2, 4)), ValueError,
     r'in_index / out_strides: expected equal lengths'),
    (dict(out_strides=(0,)), ValueError, r'out_strides: expected positive strides, got \(0,\)'),
    (dict(image_mean=(1, 2, 3)), ValueError, 'image_mean / image_std: expected both or neither'),
    (dict(image_mean=(1, 2), image_std=(1, 2)), ValueError, r'image_mean: expected 3 values'),
])
def test_bad_arguments_fail_at_build(kwargs, error, message):
    with pytest.raises(error, match=message):
        anyup_neck(**kwargs)


def test_bilinear_mode_is_checked():
    with pytest.raises(ValueError, match=r"mode: expected one of \('bilinear', 'bicubic', "
                                         r"'nearest'\), got 'linear'"):
        MODELS.build(dict(type='BilinearNeck', mode='linear'))


def test_forward_without_image_or_with_too_few_levels_says_what_to_do():
    neck = anyup_neck(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, in_index=3)
    with pytest.raises(TypeError, match="needs the input image: use type='AnyUpEncoderDecoder'"):
        neck((torch.randn(1, 4, 2, 2),))
    with pytest.raises(ValueError, match=r'in_index: expected indices in \[-1, 1\) \(the backbone '
                                         r'gives 1 feature maps\), got \(3,\)'):
        neck((torch.randn(1, 4, 2, 2),), torch.randn(1, 3, 8, 8))


def test_unknown_normalisation_is_an_error_not_a_guess():
    neck = anyup_neck()
    with pytest.raises(RuntimeError, match='image normalisation is unknown'):
        neck((torch.randn(1, 4, 2, 2),), torch.randn(1, 3, 8, 8))
