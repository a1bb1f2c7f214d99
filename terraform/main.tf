locals {
  environment_short = {
    staging    = "stg"
    production = "prd"
  }

  # aiplatform-prd: the stem of every resource name.
  name = "${var.project}-${local.environment_short[var.environment]}"

  # Storage account and registry names allow only lowercase letters and digits.
  compact_name = replace(local.name, "-", "")

  tags = merge(var.tags, {
    project     = var.project
    environment = var.environment
    managed-by  = "terraform"
  })
}

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "this" {
  name     = "rg-${local.name}"
  location = var.location
  tags     = local.tags
}
