"""The docker backend: docker-py against the real TAO containers (or the local stand-in image)."""
