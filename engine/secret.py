"""The project secret: from ``TAILORMAIL_SECRET``, else a private file created on first use.

The file is created with mode 0600 atomically (written under a temporary name opened
0600, then linked into place), so there is no moment at which another user could read it.
A secret file that the group or others can read is still used, with a warning.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import warnings
from pathlib import Path

from engine.errors import ConfigError, TailormailWarning

MIN_SECRET_BYTES = 32
SECRET_ENV = "TAILORMAIL_SECRET"


class SecurityWarning(TailormailWarning):
    """Something works but exposes more than it should (a readable secret file)."""


def checked_env_secret(value: str) -> bytes:
    """``TAILORMAIL_SECRET``'s value checked: empty or shorter than 32 bytes is an error."""
    data = value.encode()
    if not data.strip():
        raise ConfigError(
            f"{SECRET_ENV} is set but empty; unset it to use the secret file, or set at "
            f"least {MIN_SECRET_BYTES} random bytes (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{SECRET_ENV} is {len(data)} bytes long; it must be at least "
            f"{MIN_SECRET_BYTES} (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return data


def _create(path: Path) -> None:
    """Write a new random secret to ``path``, readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(MIN_SECRET_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # never replace: racing starts agree
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path``, creating the file first if there is none.

    Raises ``ConfigError`` naming the file when it is a directory, cannot be read, or is
    empty; warns (``SecurityWarning``) when the group or others may read it.
    """
    if not path.exists() and not path.is_symlink():
        try:
            _create(path)
        except OSError as exc:
            raise ConfigError(f"secret file {path}: cannot be created ({exc.strerror})") from None
    if path.is_dir():
        raise ConfigError(f"secret file {path} is a directory; secret_file must name a file")
    try:
        data = path.read_bytes().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"secret file {path}: cannot be read ({exc.strerror})") from None
    if not data:
        raise ConfigError(
            f"secret file {path} is empty; delete it and a new secret is created "
            "(links in emails already sent stop working), or restore the old one"
        )
    if stat.S_IMODE(mode) & 0o077:
        warnings.warn(
            f"secret file {path} can be read by other users (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}",
            SecurityWarning,
            stacklevel=2,
        )
    return data
