"""Secret settings: which are secret, key files, encryption at rest, and the store's use of them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from rostersync import secrets, service
from rostersync.errors import ConfigError
from rostersync.store.schema import sources


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.ENV_KEY, raising=False)


def test_which_settings_are_secret() -> None:
    for name in ("credentials", "refresh_token", "oauth_client", "client_secret", "api_key"):
        assert secrets.is_secret(name)
    for name in ("path", "url", "subject", "school", "sheet", "api_endpoint", "ou_schools"):
        assert not secrets.is_secret(name)
    assert secrets.mask({"credentials": "{...}", "subject": "a@b.org", "password": ""}) == {
        "credentials": "•••",
        "subject": "a@b.org",
        "password": "",
    }


def test_round_trip_keeps_other_settings_in_clear() -> None:
    ring = secrets.Keyring(Fernet.generate_key())
    sealed = ring.encrypt({"credentials": '{"private_key": "k"}', "subject": "a@b.org"})
    assert sealed["credentials"].startswith(secrets.PREFIX)
    assert "private_key" not in sealed["credentials"]
    assert sealed["subject"] == "a@b.org"
    assert ring.encrypt(sealed) == sealed  # already encrypted values are kept
    assert ring.decrypt(sealed) == {"credentials": '{"private_key": "k"}', "subject": "a@b.org"}


def test_another_key_cannot_decrypt() -> None:
    sealed = secrets.Keyring(Fernet.generate_key()).encrypt({"credentials": "x"})
    with pytest.raises(ConfigError, match="encrypted with another secret key"):
        secrets.Keyring(Fernet.generate_key()).decrypt(sealed)


def test_a_bad_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secrets.ENV_KEY, "not-a-key")
    with pytest.raises(ConfigError, match="not a Fernet key"):
        secrets.keyring("sqlite:///x.sqlite")


def test_key_file_beside_a_sqlite_store(tmp_path: Path, no_env_key: None) -> None:
    url = f"sqlite:///{tmp_path / 'rostersync.sqlite'}"
    ring = secrets.keyring(url)
    path = tmp_path / "rostersync.sqlite.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = ring.encrypt({"token": "t"})
    assert secrets.keyring(url).decrypt(sealed) == {"token": "t"}


def test_key_file_in_the_home_config_for_other_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env_key: None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert secrets.key_path("postgresql+psycopg://db/x") == (
        tmp_path / ".config" / "rostersync" / "secret.key"
    )
    secrets.keyring("postgresql+psycopg://db/x")
    assert stat.S_IMODE(secrets.key_path("postgresql+psycopg://db/x").stat().st_mode) == 0o600


def test_the_environment_key_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv(secrets.ENV_KEY, key.decode())
    sealed = secrets.keyring(f"sqlite:///{tmp_path / 's.sqlite'}").encrypt({"token": "t"})
    assert not (tmp_path / "s.sqlite.key").exists()
    assert secrets.Keyring(key).decrypt(sealed) == {"token": "t"}


def test_a_key_file_setting_is_read_once(tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text('{"type": "service_account"}')
    read = secrets.read_files({"credentials": str(key_file), "path": str(key_file)})
    assert read == {"credentials": '{"type": "service_account"}', "path": str(key_file)}
    assert secrets.read_files({"credentials": '{"a": 1}'}) == {"credentials": '{"a": 1}'}
    with pytest.raises(ConfigError, match="does not exist"):
        secrets.read_files({"credentials": str(tmp_path / "missing.json")})


def test_store_keeps_secrets_encrypted_and_updates_keep_them(
    store: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(secrets.ENV_KEY, Fernet.generate_key().decode())
    roster = tmp_path / "roster.csv"
    roster.write_text("Teacher Email,Class Name,Student Email\nt@x.org,Art,s@x.org\n")
    service.add_district(store, "D")
    service.add_source(store, "files", "D", "csv", {"path": str(roster), "password": "hunter2"})
    with store.connect() as conn:
        raw = conn.execute(sa.select(sources.c.config)).scalar_one()
    assert "hunter2" not in json.dumps(raw) and raw["path"] == str(roster)

    service.update_source(store, "files", {"school": "Lincoln"})
    with store.connect() as conn:
        raw = conn.execute(sa.select(sources.c.config)).scalar_one()
    assert raw["school"] == "Lincoln" and raw["password"].startswith(secrets.PREFIX)
    assert service.reveal(store, raw)["password"] == "hunter2"
    assert service.list_sources(store)[0]["config"]["password"] == "•••"


def test_sources_without_secrets_need_no_key(
    store: sa.Engine, tmp_path: Path, no_env_key: None
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("Teacher Email,Class Name,Student Email\nt@x.org,Art,s@x.org\n")
    service.add_district(store, "D")
    service.add_source(store, "files", "D", "csv", {"path": str(roster)})
    assert not list(tmp_path.glob("*.key"))
