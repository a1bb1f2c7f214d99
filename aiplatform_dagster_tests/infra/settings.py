"""The platform's settings as Kubernetes hands them to its pods: the variables
aiplatform_dagster/config.py reads (introspected from its settings classes, never listed by
hand), which of them are secrets, and the settings that comments in k8s/ tell operators to set."""

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import SecretStr

from aiplatform_dagster.config import PROFILE_VARIABLE, Section, Settings, load_settings
from aiplatform_dagster.serving.keys import KEY_PREFIX
from aiplatform_dagster_tests.infra.helm import leaves

LIBPQ_VARIABLES = {"PGPASSWORD"}
"""Read by libpq itself (psycopg, psycopg2): the only way to give a DSN setting a password from
a Secret without writing it into the DSN."""

CREDENTIAL = re.compile(
    rf"-----BEGIN|AccountKey=|SharedAccessSignature=|[?&]sig=|^(sk-|{KEY_PREFIX})"
)
"""A private key or certificate, an Azure storage key or SAS, an OpenAI or platform API key."""

DOCUMENTED_SETTING = re.compile(r"^#\s+(AIPLATFORM_\w+)=(\S+)$", re.M)
"""A comment line ``#   AIPLATFORM_NAME=value``: a setting a values file tells operators to set."""


def sections() -> Iterator[type[Section]]:
    """The settings classes ``load_settings`` reads, one per field of ``Settings``."""
    for _, section in named_sections():
        yield section


def named_sections() -> Iterator[tuple[str, type[Section]]]:
    for name, field in Settings.model_fields.items():
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, Section), field
        yield name, section


def platform_variables() -> set[str]:
    """Every environment variable the platform reads: ``{prefix}{FIELD}`` of each field of each
    section (or the field's alias), and the profile file's variable."""
    return {section.variable(name) for section in sections() for name in section.model_fields} | {
        PROFILE_VARIABLE
    }


def secret_variables() -> set[str]:
    """The variables of the settings typed SecretStr (keys, tokens, DSNs): they never print."""
    return {
        section.variable(name)
        for section in sections()
        for name, field in section.model_fields.items()
        if SecretStr in (field.annotation, *get_args(field.annotation))
    }


def effective_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Each variable the platform reads, with the value ``environ`` gives it (parsed as the
    platform parses it) or its default."""
    settings = load_settings(environ)
    return {
        section.variable(field): getattr(getattr(settings, name), field)
        for name, section in named_sections()
        for field in section.model_fields
    }


def plain_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's variables that have a literal value (not a Secret reference)."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def documented_settings(path: Path) -> dict[str, str]:
    """The ``AIPLATFORM_NAME=value`` lines in the comments of ``path``."""
    return dict(DOCUMENTED_SETTING.findall(path.read_text()))


def secret_literals(values: Mapping[str, Any]) -> list[str]:
    """The paths of the values that hold a credential (a URL with a password included)."""
    return [
        path
        for path, value in leaves(values)
        if isinstance(value, str) and (urlsplit(value).password or CREDENTIAL.search(value))
    ]
