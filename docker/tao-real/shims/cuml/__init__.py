"""CPU stand-in for RAPIDS cuML (deft's real-TAO test image only): see neighbors.py."""
from . import neighbors  # noqa: F401
