# Artifacts and asset storage in blobs (models, indexes, evaluation reports), reached through a
# private endpoint with Microsoft Entra ID only: the workload identities hold data roles on the
# container (identity.tf) and account keys are disabled.
resource "azurerm_storage_account" "artifacts" {
  name                              = "st${local.compact_name}art"
  location                          = azurerm_resource_group.this.location
  resource_group_name               = azurerm_resource_group.this.name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = var.artifacts_replication_type
  access_tier                       = "Hot"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  public_network_access_enabled     = false
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  infrastructure_encryption_enabled = true
  tags                              = local.tags

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }

  blob_properties {
    versioning_enabled = true

    delete_retention_policy {
      days = var.soft_delete_retention_days
    }

    container_delete_retention_policy {
      days = var.soft_delete_retention_days
    }
  }
}

resource "azurerm_storage_container" "artifacts" {
  name                  = "artifacts"
  storage_account_id    = azurerm_storage_account.artifacts.id
  container_access_type = "private"
}

# The ReadWriteMany volume aiplatform-storage (AIPLATFORM_STORAGE_DIR) on premium Azure Files.
# Account keys stay enabled on this account only: the Azure Files CSI driver mounts SMB shares
# with the account key, and SMB has no Entra ID mount for Linux pods. Public access is still
# off; nodes reach the share through the private endpoint.
resource "azurerm_storage_account" "files" {
  name                             = "st${local.compact_name}files"
  location                         = azurerm_resource_group.this.location
  resource_group_name              = azurerm_resource_group.this.name
  account_kind                     = "FileStorage"
  account_tier                     = "Premium"
  account_replication_type         = var.files_replication_type
  min_tls_version                  = "TLS1_2"
  https_traffic_only_enabled       = true
  public_network_access_enabled    = false
  shared_access_key_enabled        = true
  allow_nested_items_to_be_public  = false
  cross_tenant_replication_enabled = false
  tags                             = local.tags

  # The CSI driver mounts with the account key, never a SAS: any SAS signed with the key
  # is meant to be short-lived, and one that outlives this is logged.
  sas_policy {
    expiration_period = "01.00:00:00"
    expiration_action = "Log"
  }

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices"]
  }

  share_properties {
    retention_policy {
      days = var.soft_delete_retention_days
    }
  }
}

resource "azurerm_storage_share" "storage" {
  name               = "aiplatform-storage"
  storage_account_id = azurerm_storage_account.files.id
  quota              = var.storage_share_quota_gb
  enabled_protocol   = "SMB"
}

resource "azurerm_private_endpoint" "artifacts_blob" {
  name                = "pe-${local.name}-blob"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.private_endpoints.id
  tags                = local.tags

  private_service_connection {
    name                           = "artifacts-blob"
    private_connection_resource_id = azurerm_storage_account.artifacts.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "blob"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["blob"].id]
  }
}

resource "azurerm_private_endpoint" "files_file" {
  name                = "pe-${local.name}-file"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.private_endpoints.id
  tags                = local.tags

  private_service_connection {
    name                           = "files-file"
    private_connection_resource_id = azurerm_storage_account.files.id
    subresource_names              = ["file"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "file"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["file"].id]
  }
}
