# terraform plan -var-file=environments/staging.tfvars
# Tenant-specific and secret inputs come from the environment: ARM_SUBSCRIPTION_ID,
# TF_VAR_aks_admin_group_object_ids and TF_VAR_postgres_administrator_password.
environment = "staging"
location    = "westeurope"

tags = {
  cost-center = "aiplatform-staging"
}

# Public API server, limited to these ranges. 203.0.113.0/24 is a documentation range that
# reaches nobody: replace it with the operators' and deployment runners' egress addresses.
api_server_private              = false
api_server_authorized_ip_ranges = ["203.0.113.0/24"]

aks_sku_tier          = "Free"
system_pool_vm_size   = "Standard_D2s_v5"
system_pool_min_count = 1
system_pool_max_count = 2
cpu_pool_min_count    = 1
cpu_pool_max_count    = 3
gpu_pool_max_count    = 1

postgres_sku_name              = "B_Standard_B2s"
postgres_storage_mb            = 32768
postgres_backup_retention_days = 7
postgres_high_availability     = false

artifacts_replication_type       = "LRS"
files_replication_type           = "LRS"
storage_share_quota_gb           = 100
soft_delete_retention_days       = 7
registry_zone_redundancy_enabled = false
log_retention_days               = 30
