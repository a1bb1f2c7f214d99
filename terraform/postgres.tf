# Reachable only from the virtual network: VNet-integrated through the delegated subnet, with
# its name resolved by the private DNS zone.
resource "azurerm_postgresql_flexible_server" "this" {
  name                          = "psql-${local.name}"
  location                      = azurerm_resource_group.this.location
  resource_group_name           = azurerm_resource_group.this.name
  version                       = var.postgres_version
  sku_name                      = var.postgres_sku_name
  storage_mb                    = var.postgres_storage_mb
  auto_grow_enabled             = true
  backup_retention_days         = var.postgres_backup_retention_days
  geo_redundant_backup_enabled  = var.postgres_geo_redundant_backup_enabled
  delegated_subnet_id           = azurerm_subnet.postgres.id
  private_dns_zone_id           = azurerm_private_dns_zone.this["postgres"].id
  public_network_access_enabled = false

  # Write-only: the password reaches Azure but never the plan or the state. The same value
  # goes into the Kubernetes Secret aiplatform-postgres (key postgresql-password).
  administrator_login               = var.postgres_administrator_login
  administrator_password_wo         = var.postgres_administrator_password
  administrator_password_wo_version = var.postgres_administrator_password_version

  authentication {
    password_auth_enabled         = true
    active_directory_auth_enabled = false
  }

  dynamic "high_availability" {
    for_each = var.postgres_high_availability ? ["ZoneRedundant"] : []

    content {
      mode = high_availability.value
    }
  }

  tags = local.tags

  lifecycle {
    # Azure picks the zones and swaps them on failover.
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
  }

  depends_on = [azurerm_private_dns_zone_virtual_network_link.this]
}

# Dagster's run storage, event log and schedules.
resource "azurerm_postgresql_flexible_server_database" "dagster" {
  name      = "dagster"
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"

  lifecycle {
    prevent_destroy = true
  }
}

# The platform's own tables: query log, audit log, agent checkpoints.
resource "azurerm_postgresql_flexible_server_database" "platform" {
  name      = "aiplatform"
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"

  lifecycle {
    prevent_destroy = true
  }
}

# The MLflow tracking server's backend store: runs, metrics and the model registry
# (k8s/charts/aiplatform-mlflow, whose migration Job creates the tables).
resource "azurerm_postgresql_flexible_server_database" "mlflow" {
  name      = "mlflow"
  server_id = azurerm_postgresql_flexible_server.this.id
  charset   = "UTF8"
  collation = "en_US.utf8"

  lifecycle {
    prevent_destroy = true
  }
}
