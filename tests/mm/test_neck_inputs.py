"""AnyUpNeck rejects the bad inputs AnyUp rejects, with the same messages: one list of cases
(:mod:`tests.upsampler.bad_inputs`) for every public entry. The neck decides the output sizes
itself, so the image and feature cases apply."""
import pytest
from mmseg.registry import MODELS

from tests.upsampler.bad_inputs import BAD_INPUTS, FEATURES, IMAGE, MODEL_ARGS

#: image normalisation of the data preprocessor (RGB, 0-255 scale)
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)

@pytest.mark.parametrize('argument, value, error, pattern', [
    case for case in BAD_INPUTS if case.values[0] != 'output_size'])
def test_neck_rejects_bad_input(argument, value, error, pattern):
    neck = MODELS.build(dict(type='AnyUpNeck', upsampler=dict(MODEL_ARGS), image_mean=MEAN,
                             image_std=STD))
    inputs = {'image': IMAGE, 'features': FEATURES, argument: value}
    with pytest.raises(error, match=pattern):
        neck((inputs['features'],), inputs['image'])
