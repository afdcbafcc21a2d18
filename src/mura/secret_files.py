"""Files that hold secrets (API tokens, STOW credentials): read only when nobody else can read them.

One rule for every secret a server takes, like ssh's for its keys: a file group or others can read is
refused with the `chmod` that fixes it, before its content is used.
"""

from __future__ import annotations

from pathlib import Path

from mura.errors import MuraError


def read_secret_file(path: Path, label: str) -> str:
    """The text of `path`; MuraError (prefixed with `label`, e.g. "token file PATH") if it cannot be read
    or if its permissions let group or others read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise MuraError(f"{label}: cannot be read ({reason}); give a readable file") from None
    if mode & 0o077:
        raise MuraError(
            f"{label}: permissions {mode & 0o777:04o} let group or others read it; run chmod 600 {path}"
        )
    return text
