"""Files only the node's own user can read: what the DICOM node keeps on disk is patient data.

Folders are 0700 and files 0600, whatever the umask. A folder that already exists is adopted only if
this user owns it and no one else may write to it: a predictable folder pre-created by another user
(or left world-writable) would let that user read the received images or alter results before they
are sent. A folder of ours that others may merely read is closed (0700) rather than refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mura.atomic import atomic_path
from mura.errors import MuraError

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """Create `path` (and its missing parents) 0700, or check that an existing one is this user's alone."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise MuraError(f"folder {path}: cannot be used ({exc.strerror}); choose another folder") from None
    if not stat.S_ISDIR(info.st_mode):
        raise MuraError(f"folder {path}: exists and is not a folder; remove it or choose another folder")
    if info.st_uid != os.getuid():
        raise MuraError(
            f"folder {path}: owned by another user (uid {info.st_uid}), who could read or alter what is "
            "kept there; remove it or choose a folder of your own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise MuraError(
            f"folder {path}: others may write to it (mode {mode:04o}), so what is kept there could be "
            f"altered; remove it, or check its content and run chmod 700 {path}"
        )
    if mode != FOLDER_MODE:
        os.chmod(path, FOLDER_MODE)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write `data` atomically (`mura.atomic`) into a file created 0600: never readable by others."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # a leftover temporary of the same name keeps its mode otherwise
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return path


def make_private(path: Path) -> None:
    """Make a file written by someone else's code (pydicom, highdicom) 0600."""
    os.chmod(path, FILE_MODE)
