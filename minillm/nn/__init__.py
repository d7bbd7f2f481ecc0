"""``minillm.nn``: layers and the functional ops (``minillm.nn.functional``)."""
from . import functional  # noqa: F401
