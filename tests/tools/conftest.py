"""The tools tests share the generated data and weights of the mm tests."""
from tests.mm.helpers import anyup_checkpoint, demo_data  # noqa: F401  (fixtures)
