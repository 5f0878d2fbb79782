"""The real-TAO tier (`make tao-test` → .ci/tao-test): NVIDIA's own TAO 7.3.0 code (nvidia-tao-pytorch,
nvidia-tao-ds from PyPI) on CPU in the image docker/tao-real/build.sh makes, driven by deft's docker backend.

Every test here is marked `tao_real` (and `requires_docker`, so the docker guard lets it reach the engine);
`make test` deselects them (pyproject addopts), and without DEFT_TAO_REAL_IMAGE they skip, saying how to
build the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from docker_guard import image_named_by

from .workspace import demo_source

IMAGE_ENV = "DEFT_TAO_REAL_IMAGE"


@pytest.fixture(scope="session")
def tao_image() -> str:
    """The real-TAO image `make tao-test` built (docker/tao-real/build.sh)."""
    return image_named_by(IMAGE_ENV, built_by="`make tao-test` builds the real-TAO image and sets it",
                          script="docker/tao-real/build.sh")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_source(tmp_path_factory.mktemp("demo") / "ws")
