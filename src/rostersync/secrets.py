"""Secret source settings: which they are, reading key files once, and encryption at rest.

A secret setting (a key file's contents, a refresh token, a password) is stored encrypted with
Fernet and decrypted only when the engine builds a connector for a run. The key comes from
``ROSTERSYNC_SECRET_KEY`` or a key file created on first use; see ``docs/connectors/google.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from rostersync.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_KEY = "ROSTERSYNC_SECRET_KEY"
PREFIX = "fernet:"
MASK = "•••"

#: Settings that are secret whatever their name says.
SECRET_SETTINGS = frozenset({"credentials", "refresh_token", "oauth_client"})
#: A setting whose name contains one of these is secret too.
SECRET_WORDS = ("password", "secret", "token", "key", "credentials")
#: Settings whose value may name a file: its contents are stored, not the path.
FILE_SETTINGS = frozenset({"credentials"})


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_SETTINGS or any(word in lowered for word in SECRET_WORDS)


def mask(settings: Mapping[str, object]) -> dict[str, object]:
    """The settings as shown to people: secret values replaced by a mask."""
    return {k: (MASK if is_secret(k) and v else v) for k, v in settings.items()}


def read_files(settings: Mapping[str, str]) -> dict[str, str]:
    """Replace a file setting that names a file by the file's contents.

    A value that is already the contents (JSON, starting with ``{``) or already encrypted is
    kept as it is, so the API can pass the key itself.
    """
    out = dict(settings)
    for name in FILE_SETTINGS & out.keys():
        value = out[name].strip()
        if not value or value.startswith(("{", PREFIX)):
            continue
        path = Path(value).expanduser()
        try:
            out[name] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"The {name!r} setting names {value}, which does not exist. Give the path of the "
                "JSON key file downloaded from the Google Cloud console."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"The {name!r} file {value} cannot be read: {exc}.") from None
    return out


class Keyring:
    """Encrypts and decrypts secret settings with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{ENV_KEY} (or the secret key file) is not a Fernet key. Generate one with "
                '`python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`.'
            ) from None

    def encrypt(self, settings: Mapping[str, str]) -> dict[str, str]:
        """The settings with every secret value encrypted (values already encrypted kept)."""
        out = {}
        for name, value in settings.items():
            if is_secret(name) and value and not value.startswith(PREFIX):
                value = PREFIX + self._fernet.encrypt(value.encode()).decode("ascii")
            out[name] = value
        return out

    def decrypt(self, settings: Mapping[str, object]) -> dict[str, str]:
        """The settings in clear, for building a connector; never store the result."""
        out = {}
        for name, value in settings.items():
            text = str(value)
            if text.startswith(PREFIX):
                try:
                    text = self._fernet.decrypt(text[len(PREFIX) :].encode("ascii")).decode()
                except InvalidToken:
                    raise ConfigError(
                        f"The source's {name!r} setting was encrypted with another secret key. "
                        f"Set {ENV_KEY} to the key in use when it was stored, or set the "
                        "setting again with `rostersync source set`."
                    ) from None
            out[name] = text
        return out


def key_path(url: sa.URL | str) -> Path:
    """Where the key file lives when ``ROSTERSYNC_SECRET_KEY`` is unset: beside a SQLite store
    file, else in the user's configuration folder."""
    parsed = sa.make_url(url) if isinstance(url, str) else url
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        store = Path(database).expanduser().resolve()
        return store.with_name(store.name + ".key")
    return Path("~/.config/rostersync/secret.key").expanduser()


def keyring(url: sa.URL | str) -> Keyring:
    """The keyring of the store at ``url``; creates its key file (mode 0600) on first use."""
    from_env = os.environ.get(ENV_KEY, "").strip()
    if from_env:
        return Keyring(from_env.encode())
    path = key_path(url)
    try:
        return Keyring(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return Keyring(path.read_bytes().strip())
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    logger.warning(
        "Created the secret key file %s; back it up with the store, or set %s.", path, ENV_KEY
    )
    return Keyring(key)


def has_secrets(settings: Mapping[str, object]) -> bool:
    return any(str(v).startswith(PREFIX) for v in settings.values())
