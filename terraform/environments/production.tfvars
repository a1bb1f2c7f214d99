# terraform plan -var-file=environments/production.tfvars
# Tenant-specific and secret inputs come from the environment: ARM_SUBSCRIPTION_ID,
# TF_VAR_aks_admin_group_object_ids and TF_VAR_postgres_administrator_password.
environment = "production"
location    = "westeurope"

tags = {
  cost-center = "aiplatform-production"
}

# Private API server: kubectl and deployments run from inside the virtual network (or a
# peered one).
api_server_private = true

aks_sku_tier          = "Standard"
system_pool_vm_size   = "Standard_D4s_v5"
system_pool_min_count = 3
system_pool_max_count = 5
cpu_pool_min_count    = 2
cpu_pool_max_count    = 10
gpu_pool_max_count    = 4

postgres_sku_name                     = "GP_Standard_D4ds_v5"
postgres_storage_mb                   = 131072
postgres_backup_retention_days        = 35
postgres_geo_redundant_backup_enabled = true
postgres_high_availability            = true

artifacts_replication_type       = "GZRS"
files_replication_type           = "ZRS"
storage_share_quota_gb           = 1024
soft_delete_retention_days       = 30
registry_zone_redundancy_enabled = true
log_retention_days               = 90
