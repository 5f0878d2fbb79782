"""deft-aoi: the DEFT AOI improvement loop as one dependable program."""

__version__ = "0.1.0"
