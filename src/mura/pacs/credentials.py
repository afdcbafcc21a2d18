"""STOW-RS credentials: from a private file or the environment, never the command line, never logged.

A password inside a URL (`https://user:pass@host/...`) is visible to every user of the machine in
`ps` (argv is world-readable on Linux) and in every log line that names the destination, so such a
URL is refused. The credentials come instead from a file only its owner may read (as ssh insists for
keys) or from the environment, and go out only in the HTTP Authorization header. `redact` masks what
may still be secret in text that names a URL (user info, every query value) before it is logged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mura.errors import MuraError
from mura.secret_files import read_secret_file

USER_VARIABLE = "MURA_STOW_USER"
PASSWORD_VARIABLE = "MURA_STOW_PASSWORD"
MASK = "***"
_USERINFO = re.compile(r"(?<=://)[^/?#@\s]+@")
_QUERY_VALUE = re.compile(r"([?&][^=&#\s]+=)[^&#\s'\")]*")


@dataclass(frozen=True)
class BasicCredentials:
    """A user name and password for HTTP Basic authentication; the password stays out of `repr`."""

    user: str
    password: str = field(repr=False)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the user info of any URL, every query value and each of `secrets` masked."""
    text = _QUERY_VALUE.sub(rf"\1{MASK}", _USERINFO.sub(f"{MASK}@", text))
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def check_url_has_no_credentials(url: str) -> None:
    """MuraError for a URL that carries a user name or password (they would show in `ps` and logs)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise MuraError(
            f"STOW-RS URL {redact(url)}: carries a user name or password, which process lists and logs "
            f"would show; remove them from the URL and give them in a credentials file or in "
            f"{USER_VARIABLE} and {PASSWORD_VARIABLE}"
        )


def stow_credentials(
    stow_credentials_file: Path | None, environ: Mapping[str, str]
) -> BasicCredentials | None:
    """STOW-RS credentials from the file (one line `user:password`, mode 600) or the environment;
    None when neither holds any."""
    in_environment = bool(environ.get(USER_VARIABLE) or environ.get(PASSWORD_VARIABLE))
    if stow_credentials_file is not None and in_environment:
        raise MuraError(
            f"STOW-RS credentials: given both in stow_credentials_file and in {USER_VARIABLE}/"
            f"{PASSWORD_VARIABLE}; keep one of them"
        )
    if stow_credentials_file is not None:
        return _read_credentials_file(Path(stow_credentials_file))
    if not in_environment:
        return None
    user, password = environ.get(USER_VARIABLE, ""), environ.get(PASSWORD_VARIABLE, "")
    if not user or not password or ":" in user:
        raise MuraError(
            f"STOW-RS credentials: set both {USER_VARIABLE} (no colon) and {PASSWORD_VARIABLE}, or neither"
        )
    return BasicCredentials(user, password)


def _read_credentials_file(path: Path) -> BasicCredentials:
    text = read_secret_file(path, f"stow_credentials_file {path}")
    lines = [line for line in text.splitlines() if line.strip()]
    user, colon, password = lines[0].partition(":") if len(lines) == 1 else ("", "", "")
    if not user or not colon or not password:
        raise MuraError(
            f"stow_credentials_file {path}: expected one line user:password (the user name without a "
            "colon); write it so"
        )
    return BasicCredentials(user, password)
