"""The image, built once per test run (``scripts/image build``: the base image once per
machine, the Dockerfile's layers cached) and shared by every module of tests/image."""

from __future__ import annotations

import pytest

from tests.image.podman import build_image


@pytest.fixture(scope="session")
def image() -> str:
    return build_image()
