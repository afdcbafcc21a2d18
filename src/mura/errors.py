"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class MuraError(Exception):
    """A problem with the user's input or environment that the user can fix."""


class ImageDecodeError(MuraError):
    """An image (or DICOM) file that cannot be turned into pixels; the message names file and reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
