"""The tools tests share the generated data and weights of the mm tests, and import the tools
(and their shared modules, e.g. ``_runner_cli``) as ``python tools/<tool>.py`` would."""
import sys

from tests.mm.helpers import REPO, anyup_checkpoint, demo_data  # noqa: F401  (fixtures)

TOOLS = str(REPO / 'tools')
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
