"""API keys of the serving API: stored only as hashes, each with scopes and a rate limit.

A raw key (``aip_`` + 43 url-safe characters) is shown once, when ``create_key`` makes it; the
key file holds only ``sha256:<hex>`` of it, so a leaked file grants nothing. Keys carry 256
random bits, so a plain SHA-256 (no salt, no slow hash) cannot be brute-forced, and a lookup
costs one hash per request. No function here logs, and no message includes a raw key.

The file (``AIPLATFORM_SERVING_API_KEYS_FILE``, default ``serving/api_keys.yaml`` in the
storage folder)::

    keys:
      - name: dashboard
        hash: "sha256:<64 hex digits>"
        scopes: [query, agent]
        requests_per_minute: 60

Scopes are exact: ``admin`` does not imply ``query`` or ``agent``; a key lists each it needs.
"""

import fcntl
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from aiplatform_dagster.config import Settings
from aiplatform_dagster.errors import PlatformError
from aiplatform_dagster.rag.index.atomic import write_atomically

KEY_PREFIX = "aip_"
HASH_PREFIX = "sha256:"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_FILE_LOCK = threading.Lock()


class Scope(StrEnum):
    """What a key may call: questions, agent workflows, or administration."""

    QUERY = "query"
    AGENT = "agent"
    ADMIN = "admin"


class KeyFileError(PlatformError):
    """The key file cannot be read or changed; the message names the file, key and field."""


class AuthError(PlatformError):
    """A request without a usable key (401) or outside its key's scopes (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def headers(self) -> dict[str, str]:
        """Response headers: a 401 names the scheme the client should use (RFC 6750)."""
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


class ApiKey(BaseModel):
    """One stored key: its name, the hash of the raw key, its scopes and its rate limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", repr=False)
    scopes: frozenset[Scope] = Field(min_length=1)
    requests_per_minute: int = Field(default=60, gt=0)

    @field_serializer("scopes")
    def _ordered(self, scopes: frozenset[Scope]) -> list[str]:
        """Scopes in a fixed order, so a rewritten file differs only where a key changed."""
        return [scope.value for scope in Scope if scope in scopes]


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[Any] | None = None


def hash_key(raw_key: str) -> str:
    """The stored form of a raw key: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def keys_path(settings: Settings) -> Path:
    """The key file the settings name, else ``serving/api_keys.yaml`` in the storage folder."""
    configured = settings.serving.api_keys_file
    return configured or settings.paths.storage_dir / "serving" / "api_keys.yaml"


class KeyStore:
    """The keys of one file, for authenticating requests."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self.keys: tuple[ApiKey, ...] = tuple(keys)

    @classmethod
    def load(cls, path: Path) -> "KeyStore":
        """Read and validate ``path``; a missing file is an empty store (every request is 401)."""
        return cls(_read(Path(path)))

    def __len__(self) -> int:
        return len(self.keys)

    def authenticate(self, raw_key: str) -> ApiKey | None:
        """The key whose hash matches ``raw_key``, or None.

        Every stored hash is compared, in constant time each, so the time taken reveals
        neither which key matched nor how much of a hash a guess got right.
        """
        candidate = hash_key(raw_key).encode("ascii")
        found = None
        for key in self.keys:
            if hmac.compare_digest(candidate, key.hash.encode("ascii")):
                found = key
        return found


def authorize(store: KeyStore, headers: Mapping[str, str], scope: Scope) -> ApiKey:
    """The key a request carries, if it holds ``scope``; else an ``AuthError`` (401 or 403).

    The key is read from ``Authorization: Bearer <key>`` or else ``X-API-Key``; header names
    and the scheme are case-insensitive.
    """
    raw_key = _presented_key(headers)
    if not raw_key:
        raise AuthError(
            401, "missing API key: send it as `Authorization: Bearer <key>` or `X-API-Key`"
        )
    key = store.authenticate(raw_key)
    if key is None:
        raise AuthError(401, "unknown API key")
    if scope not in key.scopes:
        held = ", ".join(item.value for item in Scope if item in key.scopes)
        raise AuthError(403, f"key {key.name!r} lacks scope {scope.value!r} (it has: {held})")
    return key


def create_key(
    path: Path, name: str, scopes: Iterable[Scope | str], requests_per_minute: int = 60
) -> str:
    """Add a key named ``name`` to the file and return its raw form, which is shown only once.

    The file is rewritten atomically (scratch file, then rename) under a lock, so a reader
    sees the old file or the new one and two concurrent creations both land.
    """
    path = Path(path)
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    try:
        key = ApiKey(
            name=name,
            hash=hash_key(raw_key),
            scopes=frozenset(scopes),
            requests_per_minute=requests_per_minute,
        )
    except ValidationError as error:
        raise KeyFileError(f"{path}: key {name!r}: {_fields(error)}") from None
    with _locked(path):
        keys = _read(path)
        if any(existing.name == name for existing in keys):
            raise KeyFileError(
                f"{path}: a key named {name!r} already exists; revoke it first or pick another name"
            )
        _write(path, [*keys, key])
    return raw_key


def revoke_key(path: Path, name: str) -> None:
    """Remove the key named ``name``; requests with it are refused once the store reloads."""
    path = Path(path)
    with _locked(path):
        keys = _read(path)
        kept = [key for key in keys if key.name != name]
        if len(kept) == len(keys):
            known = ", ".join(key.name for key in keys) or "none"
            raise KeyFileError(f"{path}: no key named {name!r} (keys: {known})")
        _write(path, kept)


def _presented_key(headers: Mapping[str, str]) -> str | None:
    lowered = {name.lower(): value for name, value in headers.items()}
    authorization = lowered.get("authorization", "").strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return lowered.get("x-api-key", "").strip() or None


def _read(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except OSError as error:
        raise KeyFileError(f"{path}: not readable ({error.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KeyFileError(f"{path}: not valid YAML ({error})") from None
    try:
        document = _KeyFile.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        raise KeyFileError(f"{path}: expected a list `keys:`; {_fields(error)}") from None
    keys: list[ApiKey] = []
    for position, entry in enumerate(document.keys or [], start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = f"key {name!r}" if isinstance(name, str) and name else f"key #{position}"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{path}: {label}: not a mapping of name, hash, scopes")
        try:
            key = ApiKey.model_validate(entry)
        except ValidationError as error:
            raise KeyFileError(f"{path}: {label}: {_fields(error)}") from None
        if any(existing.name == key.name for existing in keys):
            raise KeyFileError(f"{path}: {label}: the name is used by an earlier key")
        if any(hmac.compare_digest(existing.hash, key.hash) for existing in keys):
            raise KeyFileError(f"{path}: {label}: field hash: the same as an earlier key's")
        keys.append(key)
    return keys


def _write(path: Path, keys: list[ApiKey]) -> None:
    text = yaml.safe_dump({"keys": [key.model_dump(mode="json") for key in keys]}, sort_keys=False)

    def write(pending: Path) -> None:
        pending.write_text(text, "utf-8")
        pending.chmod(0o600)

    write_atomically(path, write)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    with _FILE_LOCK, open(lock_path, "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _fields(error: ValidationError) -> str:
    """One clause per problem: ``field scopes.0: Input should be 'query', 'agent' or 'admin'``."""
    return "; ".join(
        f"field {'.'.join(str(part) for part in item['loc']) or '(top)'}: {item['msg']}"
        for item in error.errors()
    )
