# Images are pulled by the kubelet identity (AcrPull, identity.tf) through the private
# endpoint; there is no admin user and no anonymous pull. Premium is the tier that supports
# private endpoints (and the retention policy: a manifest that loses its last tag, when a tag
# is pushed again, is purged after a week; deployments pull by tag).
resource "azurerm_container_registry" "this" {
  name                          = "acr${local.compact_name}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  sku                           = "Premium"
  admin_enabled                 = false
  anonymous_pull_enabled        = false
  public_network_access_enabled = false
  data_endpoint_enabled         = true
  network_rule_bypass_option    = "AzureServices"
  zone_redundancy_enabled       = var.registry_zone_redundancy_enabled
  retention_policy_in_days      = 7
  tags                          = local.tags
}

resource "azurerm_private_endpoint" "registry" {
  name                = "pe-${local.name}-acr"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  subnet_id           = azurerm_subnet.private_endpoints.id
  tags                = local.tags

  private_service_connection {
    name                           = "registry"
    private_connection_resource_id = azurerm_container_registry.this.id
    subresource_names              = ["registry"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "registry"
    private_dns_zone_ids = [azurerm_private_dns_zone.this["registry"].id]
  }
}
