"""API keys: only hashes on disk, 401/403 with messages that never carry the raw key."""

import re
import threading
from pathlib import Path

import pytest

from aiplatform_dagster.config import load_settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.serving.keys import (
    ApiKey,
    AuthError,
    KeyFileError,
    KeyStore,
    Scope,
    authorize,
    create_key,
    hash_key,
    keys_path,
    revoke_key,
)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "serving" / "api_keys.yaml"


def test_created_key_authenticates_and_the_file_holds_only_its_hash(key_file: Path) -> None:
    raw = create_key(key_file, "dashboard", [Scope.QUERY, Scope.AGENT], requests_per_minute=30)

    assert re.fullmatch(r"aip_[A-Za-z0-9_-]{43}", raw)
    text = key_file.read_text("utf-8")
    assert raw not in text
    assert raw.removeprefix("aip_") not in text
    assert hash_key(raw) in text
    key = KeyStore.load(key_file).authenticate(raw)
    assert key == ApiKey(
        name="dashboard",
        hash=hash_key(raw),
        scopes=frozenset({Scope.QUERY, Scope.AGENT}),
        requests_per_minute=30,
    )
    assert key_file.stat().st_mode & 0o077 == 0


def test_each_key_authenticates_as_itself(key_file: Path) -> None:
    first = create_key(key_file, "first", ["query"])
    second = create_key(key_file, "second", ["admin"])
    store = KeyStore.load(key_file)

    assert len(store) == 2
    assert store.authenticate(first).name == "first"
    assert store.authenticate(second).name == "second"
    assert first != second


def test_wrong_and_near_miss_keys_are_unknown(key_file: Path) -> None:
    raw = create_key(key_file, "dashboard", [Scope.QUERY])
    store = KeyStore.load(key_file)

    assert store.authenticate(raw[:-1]) is None
    assert store.authenticate(raw + "x") is None
    assert store.authenticate("") is None
    assert store.authenticate(hash_key(raw)) is None


def test_missing_file_is_an_empty_store_that_refuses_everything(key_file: Path) -> None:
    store = KeyStore.load(key_file)

    assert len(store) == 0
    with pytest.raises(AuthError) as caught:
        authorize(store, {"X-API-Key": "aip_anything"}, Scope.QUERY)
    assert caught.value.status == 401


def test_missing_key_is_401_saying_how_to_send_one(key_file: Path) -> None:
    create_key(key_file, "dashboard", [Scope.QUERY])
    store = KeyStore.load(key_file)

    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        with pytest.raises(AuthError) as caught:
            authorize(store, headers, Scope.QUERY)
        assert caught.value.status == 401
        assert str(caught.value) == (
            "missing API key: send it as `Authorization: Bearer <key>` or `X-API-Key`"
        )
        assert caught.value.headers == {"WWW-Authenticate": "Bearer"}
        assert isinstance(caught.value, PlatformError)


def test_unknown_key_is_401_without_echoing_it(key_file: Path) -> None:
    create_key(key_file, "dashboard", [Scope.QUERY])
    guess = "aip_" + "A" * 43

    with pytest.raises(AuthError) as caught:
        authorize(KeyStore.load(key_file), {"X-API-Key": guess}, Scope.QUERY)
    assert caught.value.status == 401
    assert str(caught.value) == "unknown API key"
    assert guess not in repr(caught.value)


def test_key_outside_its_scopes_is_403_naming_key_and_scope(key_file: Path) -> None:
    raw = create_key(key_file, "reader", [Scope.QUERY, Scope.AGENT])
    store = KeyStore.load(key_file)

    with pytest.raises(AuthError) as caught:
        authorize(store, {"Authorization": f"Bearer {raw}"}, Scope.ADMIN)
    assert caught.value.status == 403
    assert str(caught.value) == "key 'reader' lacks scope 'admin' (it has: query, agent)"
    assert raw not in str(caught.value)
    assert raw not in repr(caught.value)
    assert caught.value.headers == {}


def test_admin_does_not_imply_other_scopes(key_file: Path) -> None:
    raw = create_key(key_file, "operator", [Scope.ADMIN])

    with pytest.raises(AuthError) as caught:
        authorize(KeyStore.load(key_file), {"X-API-Key": raw}, Scope.QUERY)
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "headers",
    [
        lambda raw: {"Authorization": f"Bearer {raw}"},
        lambda raw: {"authorization": f"bearer   {raw}  "},
        lambda raw: {"AUTHORIZATION": f"BEARER {raw}"},
        lambda raw: {"X-API-Key": raw},
        lambda raw: {"x-api-key": f" {raw} "},
        lambda raw: {"Authorization": "Basic dXNlcjpwdw==", "X-Api-Key": raw},
    ],
    ids=["bearer", "lowercase", "uppercase", "x-api-key", "x-api-key-lower", "basic+x-api-key"],
)
def test_key_is_read_from_either_header(key_file: Path, headers) -> None:
    raw = create_key(key_file, "dashboard", [Scope.QUERY])

    key = authorize(KeyStore.load(key_file), headers(raw), Scope.QUERY)

    assert key.name == "dashboard"


def test_duplicate_name_is_refused_and_the_file_is_unchanged(key_file: Path) -> None:
    raw = create_key(key_file, "dashboard", [Scope.QUERY])
    before = key_file.read_bytes()

    with pytest.raises(KeyFileError, match=r"a key named 'dashboard' already exists") as caught:
        create_key(key_file, "dashboard", [Scope.ADMIN])
    assert str(key_file) in str(caught.value)
    assert key_file.read_bytes() == before
    assert KeyStore.load(key_file).authenticate(raw).scopes == {Scope.QUERY}


@pytest.mark.parametrize(
    ("name", "scopes", "rpm", "field"),
    [
        ("", ["query"], 60, "field name"),
        ("has space", ["query"], 60, "field name"),
        ("ok", [], 60, "field scopes"),
        ("ok", ["read"], 60, "field scopes"),
        ("ok", ["query"], 0, "field requests_per_minute"),
    ],
)
def test_invalid_new_key_is_refused_and_nothing_is_written(
    key_file: Path, name: str, scopes: list[str], rpm: int, field: str
) -> None:
    with pytest.raises(KeyFileError, match=field):
        create_key(key_file, name, scopes, requests_per_minute=rpm)
    assert not key_file.exists()


def test_revoked_key_no_longer_authenticates(key_file: Path) -> None:
    kept = create_key(key_file, "kept", [Scope.QUERY])
    revoked = create_key(key_file, "revoked", [Scope.QUERY])

    revoke_key(key_file, "revoked")

    store = KeyStore.load(key_file)
    assert store.authenticate(revoked) is None
    assert store.authenticate(kept).name == "kept"
    with pytest.raises(KeyFileError, match=r"no key named 'revoked' \(keys: kept\)"):
        revoke_key(key_file, "revoked")


def test_concurrent_creations_all_land(key_file: Path) -> None:
    raws: dict[str, str] = {}

    def create(index: int) -> None:
        raws[f"key-{index}"] = create_key(key_file, f"key-{index}", [Scope.QUERY])

    threads = [threading.Thread(target=create, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    store = KeyStore.load(key_file)
    assert len(store) == 16
    assert all(store.authenticate(raw).name == name for name, raw in raws.items())


HASH = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keys: [\n  - name: a\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a list `keys:`"),
        ("keys: {}\n", "field keys"),
        ("keys: [1]\n", "key #1: not a mapping"),
        (
            f"keys:\n  - name: bot\n    hash: '{HASH}'\n    scopes: [query, write]\n",
            "key 'bot': field scopes.1: Input should be 'query', 'agent' or 'admin'",
        ),
        (
            "keys:\n  - name: bot\n    hash: 'md5:abc'\n    scopes: [query]\n",
            "key 'bot': field hash",
        ),
        (
            f"keys:\n  - name: bot\n    hash: '{HASH}'\n    scopes: [query]\n"
            "    requests_per_minute: -1\n",
            "key 'bot': field requests_per_minute",
        ),
        (f"keys:\n  - hash: '{HASH}'\n    scopes: [query]\n", "key #1: field name"),
        (
            f"keys:\n  - name: bot\n    hash: '{HASH}'\n    scopes: [query]\n    secret: x\n",
            "key 'bot': field secret",
        ),
        (
            f"keys:\n  - {{name: a, hash: '{HASH}', scopes: [query]}}\n"
            f"  - {{name: a, hash: 'sha256:{'1' * 64}', scopes: [query]}}\n",
            "key 'a': the name is used by an earlier key",
        ),
        (
            f"keys:\n  - {{name: a, hash: '{HASH}', scopes: [query]}}\n"
            f"  - {{name: b, hash: '{HASH}', scopes: [query]}}\n",
            "key 'b': field hash",
        ),
    ],
    ids=[
        "yaml",
        "top-level",
        "keys-not-list",
        "entry-not-mapping",
        "bad-scope",
        "bad-hash",
        "bad-rpm",
        "no-name",
        "extra-field",
        "duplicate-name",
        "duplicate-hash",
    ],
)
def test_malformed_file_names_file_key_and_field(key_file: Path, text: str, expected: str) -> None:
    key_file.parent.mkdir(parents=True)
    key_file.write_text(text, "utf-8")

    with pytest.raises(KeyFileError) as caught:
        KeyStore.load(key_file)
    message = str(caught.value)
    assert message.startswith(f"{key_file}: ")
    assert expected in message
    assert isinstance(caught.value, PlatformError)


def test_empty_file_is_an_empty_store(key_file: Path) -> None:
    key_file.parent.mkdir(parents=True)
    for text in ("", "keys:\n", "keys: []\n"):
        key_file.write_text(text, "utf-8")
        assert len(KeyStore.load(key_file)) == 0


def test_hand_written_hash_of_any_secret_authenticates(key_file: Path) -> None:
    key_file.parent.mkdir(parents=True)
    key_file.write_text(
        f"keys:\n  - name: ops\n    hash: '{hash_key('correct horse')}'\n    scopes: [admin]\n",
        "utf-8",
    )

    key = KeyStore.load(key_file).authenticate("correct horse")

    assert key.name == "ops"
    assert key.requests_per_minute == 60


def test_keys_path_follows_the_settings(tmp_path: Path) -> None:
    storage = load_settings({"AIPLATFORM_STORAGE_DIR": str(tmp_path)})
    assert keys_path(storage) == tmp_path / "serving" / "api_keys.yaml"

    configured = load_settings(
        {"AIPLATFORM_STORAGE_DIR": str(tmp_path), "AIPLATFORM_SERVING_API_KEYS_FILE": "/k.yaml"}
    )
    assert keys_path(configured) == Path("/k.yaml")
