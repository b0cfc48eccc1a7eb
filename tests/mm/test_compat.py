"""The mmcv._ext stand-in and the weights_only allow-list for Runner checkpoints."""
import argparse
import importlib.util
import pickle

import numpy as np
import pytest
import torch

import anyup_neck.mm  # noqa: F401  (installs the compat fixes)
from anyup_neck.mm.compat import MissingMmcvOpError, install_mmcv_ext_stand_in


def test_mmseg_imports_and_mmcv_ops_fail_loudly():
    if not install_mmcv_ext_stand_in():
        pytest.skip('the full mmcv (with compiled ops) is installed: no stand-in needed')
    import mmcv.ops
    import mmseg.models  # noqa: F401  (imports mmcv.ops unguarded)
    from mmengine.utils.dl_utils import mmcv_full_available

    assert importlib.util.find_spec('mmcv._ext').loader is None
    assert not mmcv_full_available()
    with pytest.raises(MissingMmcvOpError, match="'nms' was called.*full mmcv"):
        mmcv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_message_hub_state_loads_with_weights_only(tmp_path):
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance('compat_test')
    hub.update_scalar('train/loss', np.float32(0.5))
    hub.update_scalar('train/lr', 0.01)
    hub.update_info('iter', np.int64(3))
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': hub.state_dict(), 'meta': {'seed': np.int64(1)}}, path)
    loaded = torch.load(path)  # torch's default weights_only=True
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == pytest.approx(0.5)
    assert loaded['message_hub']['runtime_info']['iter'] == 3


def test_other_pickled_types_are_still_refused(tmp_path):
    path = tmp_path / 'unsafe.pth'
    torch.save({'x': argparse.Namespace(a=1)}, path)
    with pytest.raises(Exception, match='weights_only'):
        torch.load(path)


def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrEscape()}, path)
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        torch.load(path)


class _GetattrEscape:
    """Pickles as getattr(numpy.ndarray, '__class__'): the first step of a sandbox escape."""

    def __reduce__(self):
        return getattr, (np.ndarray, '__class__')
