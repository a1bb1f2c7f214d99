# The subscription comes from ARM_SUBSCRIPTION_ID (and the credentials from the usual ARM_*
# variables or `az login`), so no environment-specific identifier is committed.
provider "azurerm" {
  # Storage is reached with Microsoft Entra ID, never with account keys.
  storage_use_azuread = true

  features {
    key_vault {
      # The vault has purge protection: a destroyed vault stays recoverable.
      purge_soft_delete_on_destroy = false
    }

    resource_group {
      prevent_deletion_if_contains_resources = true
    }

    storage {
      # The storage accounts are private: Terraform manages them through Azure Resource
      # Manager only and never calls their data plane from outside the virtual network.
      data_plane_available = false
    }
  }
}
