"""Strong augmentations: every operation, the strength knob, reproducibility, bad arguments."""
import pytest
import torch
import torch.nn.functional as F

from anyup_neck.mm.models.crop_consistency import AUGMENTATIONS, StrongAugment


def _smooth_image(seed: int = 0) -> torch.Tensor:
    """(3, 48, 64) RGB in [0, 1] with structure (a coarse random field, upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=g)
    return F.interpolate(coarse, (48, 64), mode='bilinear', align_corners=False)[0]


def test_the_issue_lists_every_operation():
    assert set(AUGMENTATIONS) == {
        'color_jitter', 'photometric_distortion', 'grayscale', 'blur', 'jpeg', 'autocontrast',
        'equalize', 'sharpness', 'posterize', 'solarize', 'invert', 'gaussian_noise'}


@pytest.mark.parametrize('name', sorted(AUGMENTATIONS))
def test_operation_keeps_shape_and_range_and_strength_zero_is_identity(name):
    img = _smooth_image()
    op = AUGMENTATIONS[name]
    strong = op(img, 1.0, torch.Generator().manual_seed(1))
    assert strong.shape == img.shape and strong.dtype == img.dtype
    assert float(strong.min()) >= 0 and float(strong.max()) <= 1
    weak = op(img, 0.0, torch.Generator().manual_seed(1))
    # JPEG at quality 100 and uint8 round trips are the only changes left at strength 0.
    tolerance = 0.02 if name == 'jpeg' else 0.5 / 255 + 1e-6
    assert float((weak - img).abs().mean()) <= tolerance


def test_operations_at_full_strength_against_their_definitions():
    img, g = _smooth_image(), torch.Generator().manual_seed(0)
    torch.testing.assert_close(AUGMENTATIONS['invert'](img, 1.0, g), 1 - img)
    gray = AUGMENTATIONS['grayscale'](img, 1.0, g)
    luma = 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]       # ITU-R 601-2
    for channel in gray:
        torch.testing.assert_close(channel, luma, atol=1e-4, rtol=0)
    solarized = AUGMENTATIONS['solarize'](img, 1.0, g)
    kept, flipped = (solarized - img).abs() < 1e-6, (solarized - (1 - img)).abs() < 1e-6
    assert bool((kept | flipped).all()) and bool(flipped.any())
    # Flipped pixels are exactly the bright ones: one threshold separates them.
    assert float(img[flipped & ~kept].min()) >= float(img[kept & ~flipped].max())
    # posterize keeps the top `bits` bits, bits = 8 - round(6 u), u the generator's draw.
    bits = 8 - round(6 * float(torch.rand((), generator=torch.Generator().manual_seed(3))))
    step = 2 ** (8 - bits)
    expected = torch.div(torch.round(img * 255), step, rounding_mode='floor') * step / 255
    torch.testing.assert_close(
        AUGMENTATIONS['posterize'](img, 1.0, torch.Generator().manual_seed(3)), expected)
    assert float((AUGMENTATIONS['jpeg'](img, 1.0, g) - img).abs().mean()) > 0.002


def test_strong_augment_is_reproducible_and_draws_per_image():
    images = torch.stack([_smooth_image(0), _smooth_image(1)])
    augment = StrongAugment(strength=1.0, num_ops=3)
    a = augment(images, torch.Generator().manual_seed(5))
    b = augment(images, torch.Generator().manual_seed(5))
    c = augment(images, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert a.shape == images.shape and float((a - images).abs().mean()) > 0.01
    assert torch.equal(StrongAugment(strength=0.5, ops=['invert'], num_ops=1)(
        images, torch.Generator()), torch.lerp(images, 1 - images, 0.5))


@pytest.mark.parametrize('kwargs, name', [
    (dict(strength=1.5), 'strength'), (dict(strength=-0.1), 'strength'),
    (dict(num_ops=0), 'num_ops'), (dict(num_ops=13), 'num_ops'),
    (dict(ops=['blur', 'sepia']), 'ops'), (dict(ops=[]), 'ops'),
])
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        StrongAugment(**kwargs)


def test_bad_images_are_named():
    with pytest.raises(ValueError, match='images'):
        StrongAugment()(torch.zeros(3, 8, 8), torch.Generator())
