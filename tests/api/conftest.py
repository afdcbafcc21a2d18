"""The API tests use the inference tests' checkpoint and image factories."""

from tests.inference.conftest import make_checkpoint, smooth_images

__all__ = ["make_checkpoint", "smooth_images"]
