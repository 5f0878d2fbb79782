"""The fake backend: an in-memory docker client and the fake TAO it runs (also the stand-in image's entry)."""
