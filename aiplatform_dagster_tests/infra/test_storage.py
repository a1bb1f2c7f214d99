"""The shared storage folder on Kubernetes (k8s/charts/aiplatform-storage): a ReadWriteMany
Azure Files volume on the share terraform/ creates, mounted so that what index releases rely on
holds (server-side byte-range locks, prompt attribute refresh)."""

from typing import Any

import helm_python as helm
import pytest

from aiplatform_dagster_tests.infra.charts import STORAGE
from aiplatform_dagster_tests.infra.kubernetes import TERRAFORM_DIR, load_hcl, validate_manifests

TERRAFORM_OUTPUTS = STORAGE.install_values["azure"]
"""What `terraform output` gives for production, passed with --set as the README says."""


def rendered(azure: dict[str, str] = TERRAFORM_OUTPUTS) -> dict[str, dict[str, Any]]:
    return {manifest["kind"]: manifest for manifest in STORAGE.render({"azure": azure})}


def test_the_storage_manifests_are_valid_for_the_pinned_kubernetes() -> None:
    assert validate_manifests(rendered().values()) == []


def test_the_claim_is_shared_by_every_node_on_the_share_terraform_creates() -> None:
    claim, storage_class = rendered()["PersistentVolumeClaim"], rendered()["StorageClass"]
    assert claim["metadata"]["name"] == "aiplatform-storage"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == storage_class["metadata"]["name"]
    assert storage_class["provisioner"] == "file.csi.azure.com"
    assert storage_class["reclaimPolicy"] == "Retain"  # deleting the claim keeps the releases
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    [share] = [
        resource["azurerm_storage_share"]["storage"]
        for resource in load_hcl(TERRAFORM_DIR / "storage.tf")["resource"]
        if "azurerm_storage_share" in resource
    ]
    assert storage_class["parameters"]["shareName"] == share["name"]


def test_the_mount_keeps_locks_on_the_server_and_attributes_fresh() -> None:
    """``nobrl`` would keep fcntl locks local to each node: two index builds on two nodes would
    both hold the writer lock. Long attribute caching would hide a flipped pointer."""
    options = rendered()["StorageClass"]["mountOptions"]
    assert not any(option.startswith("nobrl") for option in options)
    assert "actimeo=1" in options
    assert {"uid=10001", "gid=10001"} <= set(options)  # the image's non-root user owns files


@pytest.mark.parametrize("missing", ["storageAccount", "resourceGroup"])
def test_the_account_must_come_from_terraform(missing: str) -> None:
    """No default account: a wrong one would mount an empty share and lose every release."""
    azure = {key: value for key, value in TERRAFORM_OUTPUTS.items() if key != missing}
    with pytest.raises(helm.HelmRenderError, match=f"azure.{missing} is required"):
        rendered(azure)
