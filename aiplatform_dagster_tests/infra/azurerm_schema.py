"""An offline stand-in for ``terraform validate`` on ``terraform/``: the azurerm provider cannot
be downloaded here, so its argument names come from a committed excerpt of its schema
(``azurerm_schema.json``), taken from the prebuilt CDKTF bindings on PyPI, which are generated
from the provider's own schema. Misspelt, removed or missing required arguments then fail.

Regenerate the excerpt after adding a resource type or moving the provider pin::

    pip download cdktf-cdktf-provider-azurerm==14.23.1 --no-deps -d /tmp/cdktf
    python -m aiplatform_dagster_tests.infra.azurerm_schema /tmp/cdktf/*.whl
"""

import io
import json
import re
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiplatform_dagster_tests.infra.kubernetes import TERRAFORM_DIR, load_hcl

SCHEMA_PATH = Path(__file__).with_name("azurerm_schema.json")

META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle"})
"""Terraform's own arguments, valid in every resource and data block."""

_LINK = re.compile(
    r"registry\.terraform\.io/providers/hashicorp/azurerm/(?P<version>[\d.]+)/docs"
    r"(?:/(?P<kind>resources|data-sources)/(?P<type>\w+))?#(?P<name>\w+)"
)
_PREFIX = "@cdktf/provider-azurerm."


def _link(prop: Mapping[str, Any]) -> re.Match[str]:
    docs = prop.get("docs", {})
    match = _LINK.search(f"{docs.get('summary', '')} {docs.get('remarks', '')}")
    if match is None:
        raise ValueError(f"no Terraform name in the docs of {prop['name']!r}")
    return match


def _nested_fqn(type_ref: Any, types: Mapping[str, Any]) -> str | None:
    """The struct a property holds (directly, in a list or set, or in a union), if any."""
    if isinstance(type_ref, dict):
        fqn = type_ref.get("fqn")
        if isinstance(fqn, str) and types.get(fqn, {}).get("datatype"):
            return fqn
        for value in type_ref.values():
            found = _nested_fqn(value, types)
            if found:
                return found
    if isinstance(type_ref, list):
        for value in type_ref:
            found = _nested_fqn(value, types)
            if found:
                return found
    return None


def _block(fqn: str, types: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments (name -> required) and nested blocks of one jsii struct, by Terraform name."""
    arguments: dict[str, bool] = {}
    blocks: dict[str, Any] = {}
    for prop in types[fqn].get("properties", []):
        name = _link(prop)["name"]
        required = not prop.get("optional", False)
        nested = _nested_fqn(prop["type"], types)
        if nested is None:
            arguments[name] = required
        else:
            blocks[name] = {"required": required, **_block(nested, types)}
    return {"arguments": dict(sorted(arguments.items())), "blocks": dict(sorted(blocks.items()))}


def _read_assembly(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as archive:
        member = next(name for name in archive.namelist() if name.endswith(".jsii.tgz"))
        packed = archive.read(member)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        handle = tar.extractfile("package/.jsii")
        assert handle is not None
        return json.load(handle)


def extract(wheel: Path, resources: Iterable[str], data_sources: Iterable[str]) -> dict[str, Any]:
    """The schema excerpt for the given resource and data source types, from the CDKTF wheel."""
    assembly = _read_assembly(wheel)
    types = assembly["types"]
    configs: dict[tuple[str, str], str] = {}
    version = ""
    for fqn, spec in types.items():
        if "cdktf.TerraformMetaArguments" not in spec.get("interfaces", []):
            continue
        link = _link(spec["properties"][0])
        kind = "resource" if link["kind"] == "resources" else "data"
        configs[(kind, f"azurerm_{link['type']}")] = fqn
        version = link["version"]
    wanted = [("resource", name) for name in resources] + [("data", name) for name in data_sources]
    missing = [name for name in wanted if name not in configs]
    if missing:
        raise KeyError(f"not in azurerm {version}: {missing}")
    excerpt: dict[str, Any] = {
        "source": f"PyPI cdktf-cdktf-provider-azurerm {assembly['version']}",
        "provider_version": version,
        "provider": _block(f"{_PREFIX}provider.AzurermProviderConfig", types),
        "resource": {},
        "data": {},
    }
    for kind, name in sorted(wanted):
        excerpt[kind][name] = _block(configs[(kind, name)], types)
    return excerpt


def used_types(terraform_dir: Path = TERRAFORM_DIR) -> tuple[set[str], set[str]]:
    """The resource and data source types the Terraform configuration declares."""
    resources: set[str] = set()
    data_sources: set[str] = set()
    for path in terraform_dir.glob("*.tf"):
        parsed = load_hcl(path)
        for block in parsed.get("resource", []):
            resources.update(block)
        for block in parsed.get("data", []):
            data_sources.update(block)
    return resources, data_sources


def load_schema() -> dict[str, Any]:
    """The committed schema excerpt."""
    return json.loads(SCHEMA_PATH.read_text())


def _is_block(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and item.get("__is_block__") for item in value
    )


def block_problems(address: str, body: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Unknown arguments, unknown blocks and missing required ones in one parsed HCL block
    (python-hcl2 marks blocks and comments with ``__``-keys, which are not arguments)."""
    problems = []
    present = set()
    for key, value in body.items():
        if key.startswith("__"):
            continue
        if key == "dynamic":
            for dynamic in value:
                for name, spec in dynamic.items():
                    if name.startswith("__"):
                        continue
                    present.add(name)
                    if name not in schema["blocks"]:
                        problems.append(f"{address}: unknown block {name!r}")
                        continue
                    for content in spec.get("content", []):
                        problems += block_problems(
                            f"{address}.{name}", content, schema["blocks"][name]
                        )
            continue
        present.add(key)
        if key in schema["blocks"] and _is_block(value):
            for item in value:
                problems += block_problems(f"{address}.{key}", item, schema["blocks"][key])
        elif key in schema["arguments"] and not _is_block(value):
            continue
        elif key in schema["blocks"]:
            problems.append(f"{address}: {key!r} is a block, not an argument")
        elif key in schema["arguments"]:
            problems.append(f"{address}: {key!r} is an argument, not a block")
        else:
            problems.append(f"{address}: unknown argument {key!r}")
    for name, required in schema["arguments"].items():
        if required and name not in present:
            problems.append(f"{address}: missing required argument {name!r}")
    for name, spec in schema["blocks"].items():
        if spec["required"] and name not in present:
            problems.append(f"{address}: missing required block {name!r}")
    return problems


def resource_problems(
    address: str, body: Mapping[str, Any], schema: Mapping[str, Any]
) -> list[str]:
    """``block_problems`` for a resource or data block, whose meta-arguments are Terraform's."""
    arguments = {key: value for key, value in body.items() if key not in META_ARGUMENTS}
    return block_problems(address, arguments, schema)


def main(argv: list[str]) -> None:
    """Write the excerpt for the types ``terraform/`` uses from the CDKTF wheel in argv[0]."""
    resources, data_sources = used_types()
    excerpt = extract(Path(argv[0]), resources, data_sources)
    SCHEMA_PATH.write_text(json.dumps(excerpt, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
