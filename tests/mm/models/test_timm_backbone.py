"""TimmBackbone: timm ViTs and CNNs as mmseg backbones (random init, local weight files)."""
import pytest
import timm
import torch
from mmseg.registry import MODELS

import anyup_neck.mm  # noqa: F401


def build(**kwargs):
    return MODELS.build(dict(type='TimmBackbone', **kwargs))


def test_vit_blocks_as_nchw_maps_without_prefix_tokens():
    backbone = build(model_name='vit_small_patch14_reg4_dinov2', out_indices=(1, -1), norm=True,
                     model_kwargs=dict(depth=3, embed_dim=48, num_heads=2))
    out = backbone(torch.randn(2, 3, 42, 28))
    assert [tuple(o.shape) for o in out] == [(2, 48, 3, 2)] * 2
    assert backbone.out_channels == (48, 48) and backbone.out_strides == (14, 14)
    assert backbone.patch_size == 14
    assert backbone.mean == pytest.approx((123.675, 116.28, 103.53))

    # The last map equals the reference: final-normed patch tokens, registers + cls dropped.
    full = backbone.model
    tokens = full.forward_features(torch.randn(1, 3, 28, 28).fill_(0.3))
    ref = tokens[:, full.num_prefix_tokens:].reshape(1, 2, 2, 48).permute(0, 3, 1, 2)
    torch.testing.assert_close(backbone(torch.full((1, 3, 28, 28), 0.3))[-1], ref)


def test_cnn_feature_pyramid():
    backbone = build(model_name='resnet18', out_indices=(1, 2, 3, 4))
    out = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in out] == [(64, 16, 16), (128, 8, 8), (256, 4, 4),
                                                   (512, 2, 2)]
    assert backbone.out_strides == (4, 8, 16, 32) and backbone.patch_size == 32


def test_pretrained_from_local_file_and_tag_mean_std(tmp_path):
    kwargs = dict(depth=2, embed_dim=32, num_heads=2)
    source = timm.create_model('vit_base_patch16_siglip_224', num_classes=0, **kwargs)
    path = tmp_path / 'weights.pth'
    torch.save(source.state_dict(), path)
    backbone = build(model_name='vit_base_patch16_siglip_224.v2_webli', pretrained=str(path),
                     model_kwargs=kwargs)
    backbone.init_weights()  # what the Runner calls: must not re-initialise
    torch.testing.assert_close(backbone.model.patch_embed.proj.weight,
                               source.patch_embed.proj.weight)
    torch.testing.assert_close(backbone.model.blocks[1].mlp.fc2.weight,
                               source.blocks[1].mlp.fc2.weight)
    assert backbone.mean == pytest.approx((127.5,) * 3)
    assert backbone.std == pytest.approx((127.5,) * 3)


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(model_name='vit_smal_patch14_dinov2'), ValueError,
     r"model_name: expected a timm model name.*got 'vit_smal_patch14_dinov2'"
     r".*close matches: \['vit_small_patch14_dinov2'"),
    (dict(model_name='resnet18', out_indices=(5,)), ValueError,
     r"out_indices: expected indices in \[-5, 5\).*got \(5,\)"),
    (dict(model_name='resnet18', out_indices=(3, 1)), ValueError, 'increasing order'),
    (dict(model_name='resnet18', pretrained='missing/resnet18.pth'), FileNotFoundError,
     r"pretrained: expected a local weights file.*'missing/resnet18.pth'"),
])
def test_bad_arguments_fail_at_build(kwargs, error, message):
    with pytest.raises(error, match=message):
        build(**kwargs)


def test_normalise_is_the_preprocessor_normalisation_of_images_in_0_1():
    backbone = build(model_name='vit_base_patch16_clip_224.openai', model_kwargs=dict(depth=1))
    assert backbone.mean == pytest.approx((122.77, 116.75, 104.09), abs=0.01)  # CLIP's own
    images = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    mean = torch.tensor(backbone.mean, dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor(backbone.std, dtype=torch.float64).view(3, 1, 1)
    normalised = backbone.normalise(images)
    assert normalised.dtype == torch.float64
    torch.testing.assert_close(normalised, (images * 255 - mean) / std)
