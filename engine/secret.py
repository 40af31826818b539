"""The project secret: from ``TAILORMAIL_SECRET``, else a private file created on first use.

The file's first line is the current secret; further lines are previous secrets, still
accepted when verifying links minted before a rotation (``tailormail secret rotate``
writes them; delete a line to stop accepting it). Lines starting with ``#`` are comments.
With ``TAILORMAIL_SECRET``, previous secrets come from ``TAILORMAIL_SECRET_PREVIOUS``
(separated by spaces or newlines).

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError, TailormailWarning

MIN_SECRET_BYTES = 32
SECRET_ENV = "TAILORMAIL_SECRET"
PREVIOUS_ENV = "TAILORMAIL_SECRET_PREVIOUS"


class SecurityWarning(TailormailWarning):
    """Something works but exposes more than it should (a readable secret file)."""


class MissingSecretError(ConfigError):
    """The secret is gone while the database holds data that needs it: never replaced
    silently (``tailormail secret rotate`` replaces it on purpose)."""


@dataclass(frozen=True)
class ProjectSecret:
    """The current secret (signs everything new) and the previous ones (still verify)."""

    current: bytes
    previous: tuple[bytes, ...] = ()
    source: str = ""  # where it came from, for messages: a file path or the variable

    @property
    def all(self) -> tuple[bytes, ...]:
        """Every accepted secret, the current one first."""
        return (self.current, *self.previous)


def checked_env_secret(value: str, name: str = SECRET_ENV) -> bytes:
    """A secret variable's value checked: empty or shorter than 32 bytes is an error."""
    data = value.encode()
    if not data.strip():
        raise ConfigError(
            f"{name} is set but empty; unset it to use the secret file, or set at "
            f"least {MIN_SECRET_BYTES} random bytes (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name} is {len(data)} bytes long; it must be at least "
            f"{MIN_SECRET_BYTES} (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return data


def previous_env_secrets(value: str) -> list[bytes]:
    """``TAILORMAIL_SECRET_PREVIOUS``'s secrets, each checked like ``TAILORMAIL_SECRET``."""
    return [checked_env_secret(part, PREVIOUS_ENV) for part in value.split()]


def new_secret() -> str:
    """A fresh random secret, as one line of text."""
    return secrets.token_urlsafe(MIN_SECRET_BYTES)


def write_secret_file(path: Path, lines: Sequence[str], *, replace: bool = False) -> None:
    """Write ``lines`` to ``path``, readable by its owner only, atomically.

    Without ``replace`` an existing file wins (racing first starts agree on one secret).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("".join(f"{line}\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):  # never replace: racing starts agree
                os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def secret_file_exists(path: Path) -> bool:
    """Whether anything (a file, a broken link, a directory) is at ``path``."""
    return path.exists() or path.is_symlink()


def read_secret_lines(path: Path) -> list[bytes]:
    """The secrets in ``path``, current first; never creates it.

    Raises ``ConfigError`` naming the file when it is missing, a directory, cannot be
    read, or holds no secret; warns (``SecurityWarning``) when others may read it.
    """
    if path.is_dir():
        raise ConfigError(f"secret file {path} is a directory; secret_file must name a file")
    try:
        text = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"secret file {path}: cannot be read ({exc.strerror})") from None
    lines = [line.strip() for line in text.splitlines()]
    found = [line for line in lines if line and not line.startswith(b"#")]
    if not found:
        raise ConfigError(
            f"secret file {path} is empty; restore the old one from a backup, or run "
            "`tailormail secret rotate` for a new one (links in emails already sent stop "
            "working)"
        )
    if stat.S_IMODE(mode) & 0o077:
        warnings.warn(
            f"secret file {path} can be read by other users (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}",
            SecurityWarning,
            stacklevel=2,
        )
    return found


def read_secret_file(path: Path) -> bytes:
    """The current secret in ``path``, creating the file first if there is none.

    Only for projects known to need no old secret: ``engine.project_secret`` decides
    whether a missing file may be created.
    """
    if not secret_file_exists(path):
        try:
            write_secret_file(path, [new_secret()])
        except OSError as exc:
            raise ConfigError(f"secret file {path}: cannot be created ({exc.strerror})") from None
    return read_secret_lines(path)[0]


class SecretRotationError(ConfigError):
    """A rotation that cannot be done here (the secret lives in the environment)."""
