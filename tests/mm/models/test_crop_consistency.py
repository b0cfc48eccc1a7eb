"""AnyUpCropConsistency: the loss against an independent computation, freezing, multi-backbone,
checkpoints without backbones, exported weights, and bad configurations."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from anyup_neck import AnyUp
from anyup_neck.mm.engine import save_upsampler
from anyup_neck.mm.models import AnyUpCropConsistency
from anyup_neck.mm.models.crop_consistency import CropGeometry
from tests.host_waits import HostWaits, select_gpu_paths_on_meta

from .test_losses import _cos_mse_reference

TINY_ANYUP = dict(qk_dim=16, num_heads=4, lfu_basis=8)
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


def tiny_vit(patch: int = 8, width: int = 32) -> dict:
    """A 1-block random ViT (timm's vit_tiny config: mean = std = 0.5, not ImageNet's)."""
    return dict(model_name='vit_tiny_patch16_224',
                model_kwargs=dict(patch_size=patch, embed_dim=width, depth=1, num_heads=2,
                                  img_size=32))


def _model(**kwargs) -> AnyUpCropConsistency:
    torch.manual_seed(0)
    options = dict(backbones=dict(vit=tiny_vit()), upsampler=TINY_ANYUP, image_size=64,
                   input_size=32, crop_size=32, num_crops=2)
    return AnyUpCropConsistency(**{**options, **kwargs})


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)


def _norm(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.as_tensor(mean).view(1, 3, 1, 1)) / torch.as_tensor(std).view(1, 3, 1, 1)


def test_loss_terms_match_an_independent_computation(monkeypatch):
    model = _model(image_size=(64, 48), input_size=(32, 24), crop_size=(24, 16),
                       num_crops=3, seed=7)
    drawn = {}
    sample_origins = CropGeometry.sample_origins

    def record_origins(self, *args):
        drawn['origins'] = sample_origins(self, *args)
        return drawn['origins']

    augment = model.augment
    model.augment = lambda images, g: drawn.setdefault('augmented', augment(images, g))
    monkeypatch.setattr(CropGeometry, 'sample_origins', record_origins)
    inputs = _images(2, 64, 48)
    losses = model.loss(inputs)

    images = inputs.float() / 255
    small = F.interpolate(images, (32, 24), mode='bilinear', antialias=True, align_corners=False)
    vit, up = model.backbones['vit'], model.upsampler
    with torch.no_grad():
        p = vit(_norm(small, [0.5] * 3, [0.5] * 3))[0]                            # (2, 32, 4, 3)
        crops = torch.stack([images[b, :, 8 * r:8 * r + 24, 8 * c:8 * c + 16]
                             for b in range(2) for r, c in drawn['origins'][b].tolist()])
        targets = vit(_norm(crops, [0.5] * 3, [0.5] * 3))[0]                      # (6, 32, 3, 2)
        guidance = _norm(small, *IMAGENET)
        out = up(guidance, p, (8, 6))
        predicted = torch.stack([out[b, :, r:r + 3, c:c + 2]
                                 for b in range(2) for r, c in drawn['origins'][b].tolist()])
        guided = up(_norm(drawn['augmented'], *IMAGENET), p, (32, 24))
        clean = up(guidance, p, (32, 24))
        area = out.reshape(2, 32, 4, 2, 3, 2).mean(dim=(3, 5))
    assert p.shape == (2, 32, 4, 3) and targets.shape == (6, 32, 3, 2)
    expected = {
        'loss_crop': _cos_mse_reference(predicted.numpy(), targets.numpy()),
        'loss_self_consistency': 0.1 * _cos_mse_reference(guided.numpy(), clean.numpy()),
        'loss_input_consistency': 0.1 * _cos_mse_reference(area.numpy(), p.numpy()),
    }
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert float(losses[name].detach()) == pytest.approx(value, rel=1e-4), name


def test_only_the_upsampler_learns_and_backbones_stay_in_eval_mode():
    model = _model().train()
    assert not model.backbones['vit'].training and model.upsampler.training
    sum(model.loss(_images(2, 64, 64)).values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbones.parameters())
    without_grad = {n for n, p in model.upsampler.named_parameters() if p.grad is None}
    # Only the official model's unused attention output projection, frozen at construction.
    unused = {'cross_decode.cross_attn.attention.out_proj.weight',
              'cross_decode.cross_attn.attention.out_proj.bias'}
    assert without_grad == unused
    assert {n for n, p in model.upsampler.named_parameters() if not p.requires_grad} == unused


def test_steps_are_seeded_by_step_and_reproducible():
    inputs = _images(2, 64, 64)
    a, b = _model(seed=3), _model(seed=3)
    first = float(a.loss(inputs)['loss_crop'])
    assert int(a.step) == 1
    assert float(b.loss(inputs)['loss_crop']) == first
    assert float(a.loss(inputs)['loss_crop']) != first            # step 1 draws other crops
    c = _model(seed=4)
    assert float(c.loss(inputs)['loss_crop']) != first


def test_zero_weights_turn_terms_off():
    losses = _model(self_consistency_weight=0, input_consistency_weight=0).loss(
        _images(1, 64, 64))
    assert set(losses) == {'loss_crop'}


def test_two_backbones_of_different_width_and_patch_size():
    model = _model(backbones=dict(small=tiny_vit(8, 32), wide=tiny_vit(16, 48)))
    assert model.geometries['wide'].output_grid == (4, 4)
    assert model.geometries['small'].output_grid == (8, 8)
    calls = {'small': 0, 'wide': 0}
    for name in calls:
        model.backbones[name].register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    for _ in range(8):
        losses = model.loss(_images(2, 64, 64))
        assert torch.isfinite(sum(losses.values()))
    assert calls['small'] > 0 and calls['wide'] > 0     # each step: input + crops = 2 calls
    results = model.predict(_images(3, 64, 64))
    assert len(results) == 3 and set(results[0]) == {
        'small/anyup', 'small/bilinear', 'wide/anyup', 'wide/bilinear'}
    assert results == model.predict(_images(3, 64, 64))          # fixed validation crops


def test_checkpoints_hold_the_upsampler_not_the_backbones(tmp_path):
    model = _model()
    model.loss(_images(1, 64, 64))
    state = model.state_dict()
    assert not any(k.startswith('backbones.') for k in state)
    assert int(state['step']) == 1
    assert set(k[len('upsampler.'):] for k in state if k.startswith('upsampler.')) == set(
        model.upsampler.state_dict())
    other = _model(seed=1)
    with torch.no_grad():
        for p in other.upsampler.parameters():
            p.add_(1)
    other.load_state_dict(state)                                    # strict
    assert int(other.step) == 1
    for key, value in model.upsampler.state_dict().items():
        assert torch.equal(other.upsampler.state_dict()[key], value)


def test_exported_weights_load_into_anyup_and_the_neck(tmp_path):
    model = _model()
    with torch.no_grad():
        for p in model.upsampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_upsampler(model.state_dict(), tmp_path / 'anyup.pth')
    plain = torch.load(path, weights_only=True)
    assert set(plain) == set(AnyUp(**TINY_ANYUP).state_dict())     # official key names
    loaded = AnyUp.from_pretrained(path, lfu_mode='paper')
    image, features = torch.randn(1, 3, 32, 32), torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, features, (8, 8)),
                                   model.upsampler.eval()(image, features, (8, 8)))
    neck = MODELS.build(dict(type='AnyUpNeck', upsampler=dict(TINY_ANYUP, lfu_mode='paper'),
                             init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    neck.init_weights()
    for key, value in model.upsampler.state_dict().items():
        assert torch.equal(neck.upsampler.state_dict()[key], value)


@pytest.mark.parametrize('backbone, message', [
    (dict(model_name='vit_tiny_patch16_2244'), r"backbones\['bad'\]: .*model_name"),
    (tiny_vit(patch=12), r"backbones\['bad'\]: image_size: expected multiples of the patch "
                         r"size 12"),
    (dict(tiny_vit(), out_indices=(0, 1)) | dict(model_kwargs=dict(tiny_vit()['model_kwargs'],
                                                                   depth=2)),
     r"backbones\['bad'\]: expected one output"),
])
def test_bad_backbones_are_rejected_naming_them(backbone, message):
    with pytest.raises(ValueError, match=message):
        _model(backbones=dict(bad=backbone))


@pytest.mark.parametrize('kwargs, message', [
    (dict(backbones={}), 'backbones'), (dict(num_crops=0), 'num_crops'),
    (dict(self_consistency_weight=-1), 'self_consistency_weight'),
    (dict(augment=dict(strength=2)), 'strength'),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


def test_bad_inputs_and_modes_are_named():
    model = _model()
    with pytest.raises(ValueError, match=r'inputs: expected uint8 images \(B, 3, 64, 64\)'):
        model.loss(_images(1, 48, 64))
    with pytest.raises(ValueError, match='inputs'):
        model.loss(_images(1, 64, 64).float())
    with pytest.raises(ValueError, match='mode'):
        model(_images(1, 64, 64), mode='tensor')


def test_gpu_training_step_never_waits(monkeypatch):
    """A training step queues its GPU work without a value crossing between host and device
    (tests/host_waits.py; the meta device stands in for CUDA, with the GPU formulations): the
    draws and the crop corners stay on the host. Augmentations limited to those that run on the
    images' device (JPEG goes through the host by design; noise and two torchvision
    operations copy host-made tensors)."""
    select_gpu_paths_on_meta(monkeypatch)
    on_device = ['photometric_distortion', 'grayscale', 'blur', 'autocontrast', 'equalize',
                 'posterize', 'solarize', 'invert']
    model = _model(augment=dict(ops=on_device, num_ops=len(on_device))).to('meta')  # all run
    inputs = _images(2, 64, 64).to('meta')
    with HostWaits() as waits:
        for _ in range(2):
            losses = model.loss(inputs)
            sum(losses.values()).backward()
    assert set(losses) == {'loss_crop', 'loss_self_consistency', 'loss_input_consistency'}
    assert waits.found == []


def test_a_loaded_checkpoint_resumes_at_its_step():
    inputs = _images(2, 64, 64)
    trained = _model()
    trained.loss(inputs)
    resumed = _model()
    resumed.load_state_dict(trained.state_dict())
    assert float(resumed.loss(inputs)['loss_crop']) == float(trained.loss(inputs)['loss_crop'])
    assert int(resumed.step) == int(trained.step) == 2
