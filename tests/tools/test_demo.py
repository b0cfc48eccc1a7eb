"""tools/demo.py (``make demo``) runs its whole story end to end, at toy sizes."""
import json
import sys

from PIL import Image

from tests.mm.helpers import REPO
from tests.tools.test_train_test import run


def test_demo_story_writes_table_pictures_and_predictions(tmp_path):
    work = tmp_path / 'work'
    out = run([sys.executable, str(REPO / 'tools' / 'demo.py'), '--data-root',
               str(tmp_path / 'data'), '--num-train', '4', '--num-val', '2', '--size', '32',
               '--eval-size', '32', '--upsampler-iters', '2', '--probe-steps', '5',
               '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=2',
               'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
               'test_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=2'])
    for title in ('1. data', '2. backbone', '3. train the upsampler', '4. compare',
                  '5. pictures', '6. segmentation'):
        assert f'=== {title}' in out
    assert 'crop/vit/anyup' in out                               # the upsampler's held-out score
    results = json.loads((work / 'quality.json').read_text())
    assert list(results) == ['bilinear', 'bicubic', 'guided_filter', 'anyup_random',
                             'anyup_trained']
    assert '| anyup_trained |' in (work / 'quality.md').read_text()
    pictures = sorted((work / 'vis_features').glob('*.png'))
    assert [p.name.split('_', 2)[-1] for p in pictures] == ['attention.png', 'features.png']
    for path in pictures:
        with Image.open(path) as picture:
            assert picture.format == 'PNG'
    assert 'AnyUpNeck: loaded upsampler weights from' in out
    assert 'demo finished' in out and 'mIoU' in out
    assert (work / 'iter_2.pth').is_file()
    assert sorted(p.name for p in (work / 'predictions').glob('*.png')) == [
        'shapes_00000.png', 'shapes_00001.png']
    assert len(list((work / 'vis').rglob('*.png'))) == 2
