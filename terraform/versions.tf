terraform {
  # 1.11 brings write-only arguments and ephemeral variables, which keep the PostgreSQL
  # administrator password out of the plan and the state.
  required_version = ">= 1.11.0, < 2.0.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.55"
    }
  }

  # Remote state in an Azure storage account, given per environment at init time:
  # terraform init -backend-config=resource_group_name=... -backend-config=storage_account_name=...
  #   -backend-config=container_name=... -backend-config=key=<environment>.tfstate
  backend "azurerm" {}
}
