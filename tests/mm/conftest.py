"""Session-wide generated data and weights for the mm tests; mmseg's registry scope."""
import pytest
from mmseg.utils import register_all_modules

import anyup_neck  # noqa: F401  (registers the mm modules)

from .helpers import anyup_checkpoint, demo_data  # noqa: F401  (fixtures)


@pytest.fixture(scope='session', autouse=True)
def _mmseg_scope():
    register_all_modules(init_default_scope=True)
