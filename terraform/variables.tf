variable "kubernetes_version" {
  description = "The AKS control plane and node pool version. The offline tests validate every Kubernetes manifest in k8s/ and every Dagster step Job against this version's schemas."
  type        = string
  default     = "1.34"
}

variable "project" {
  description = "Short project name, the stem of every resource name (rg-<project>-<env>, acr<project><env>, ...). Storage account and registry names are globally unique: change it if they are taken."
  type        = string
  default     = "aiplatform"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.project))
    error_message = "project must be 3 to 12 lowercase letters or digits, starting with a letter (it goes into 24-character storage account names)."
  }
}

variable "environment" {
  description = "The environment this configuration deploys: staging or production."
  type        = string

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "location" {
  description = "Azure region of every resource, for example westeurope."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource, next to project, environment and managed-by."
  type        = map(string)
  default     = {}
}

variable "availability_zones" {
  description = "Availability zones of the system and CPU node pools; empty for a region without zones."
  type        = list(string)
  default     = ["1", "2", "3"]
}

# Network

variable "vnet_address_space" {
  description = "Address space of the virtual network that holds the node, PostgreSQL and private endpoint subnets."
  type        = string
  default     = "10.40.0.0/16"
}

variable "aks_subnet_prefix" {
  description = "Subnet of the AKS nodes (pods use the overlay range pod_cidr, so nodes only need one address each)."
  type        = string
  default     = "10.40.0.0/20"
}

variable "postgres_subnet_prefix" {
  description = "Subnet delegated to the PostgreSQL flexible server."
  type        = string
  default     = "10.40.16.0/24"
}

variable "private_endpoints_subnet_prefix" {
  description = "Subnet of the private endpoints (storage, registry, key vault)."
  type        = string
  default     = "10.40.17.0/24"
}

variable "pod_cidr" {
  description = "Azure CNI overlay range for pod addresses; must not overlap the virtual network or anything it peers with."
  type        = string
  default     = "192.168.0.0/16"
}

variable "service_cidr" {
  description = "Range of Kubernetes service addresses; must not overlap the virtual network or pod_cidr."
  type        = string
  default     = "172.16.0.0/16"
}

variable "dns_service_ip" {
  description = "Cluster DNS service address, inside service_cidr."
  type        = string
  default     = "172.16.0.10"
}

# AKS

variable "aks_sku_tier" {
  description = "AKS control plane tier: Free (no uptime SLA) or Standard (uptime SLA, for production)."
  type        = string
  default     = "Standard"

  validation {
    condition     = contains(["Free", "Standard", "Premium"], var.aks_sku_tier)
    error_message = "aks_sku_tier must be Free, Standard or Premium."
  }
}

variable "api_server_private" {
  description = "true: private API server, reachable from the virtual network (and peered networks) only. false: public API server limited to api_server_authorized_ip_ranges."
  type        = bool
  default     = true
}

variable "api_server_authorized_ip_ranges" {
  description = "CIDR ranges allowed to reach a public API server (used when api_server_private is false), for example the operators' and the deployment runners' egress addresses."
  type        = list(string)
  default     = []

  validation {
    condition     = var.api_server_private || length(var.api_server_authorized_ip_ranges) > 0
    error_message = "A public API server needs at least one authorized IP range; set api_server_private = true otherwise."
  }
}

variable "aks_admin_group_object_ids" {
  description = "Object ids of the Microsoft Entra groups that get cluster-admin through Azure RBAC (local accounts are disabled). Tenant-specific: pass it as TF_VAR_aks_admin_group_object_ids='[\"<object id>\"]'."
  type        = list(string)

  validation {
    condition = length(var.aks_admin_group_object_ids) > 0 && alltrue([
      for id in var.aks_admin_group_object_ids : can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", id))
    ])
    error_message = "aks_admin_group_object_ids needs at least one Entra group object id (a GUID)."
  }
}

variable "system_pool_vm_size" {
  description = "VM size of the system node pool (critical add-ons only)."
  type        = string
  default     = "Standard_D4s_v5"
}

variable "system_pool_min_count" {
  description = "Minimum nodes of the system pool; AKS needs at least one, three spread the add-ons over the zones."
  type        = number
  default     = 2

  validation {
    condition     = var.system_pool_min_count >= 1
    error_message = "The system pool needs at least one node."
  }
}

variable "system_pool_max_count" {
  description = "Maximum nodes of the system pool."
  type        = number
  default     = 3
}

variable "cpu_pool_vm_size" {
  description = "VM size of the CPU user pool (label aiplatform/pool=cpu): Dagster runs, CPU steps and the serving API."
  type        = string
  default     = "Standard_D8s_v5"
}

variable "cpu_pool_min_count" {
  description = "Minimum nodes of the CPU user pool."
  type        = number
  default     = 1
}

variable "cpu_pool_max_count" {
  description = "Maximum nodes of the CPU user pool."
  type        = number
  default     = 6
}

variable "gpu_pool_vm_size" {
  description = "VM size of the GPU user pool (label aiplatform/pool=gpu, taint nvidia.com/gpu=present:NoSchedule); one NVIDIA T4 by default."
  type        = string
  default     = "Standard_NC8as_T4_v3"
}

variable "gpu_pool_max_count" {
  description = "Maximum nodes of the GPU user pool, which scales from zero; this bounds the GPU spend."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_pool_max_count >= 1
    error_message = "gpu_pool_max_count must allow at least one GPU node."
  }
}

variable "gpu_pool_zones" {
  description = "Availability zones of the GPU pool; GPU sizes are often offered in fewer zones than general-purpose ones, so empty by default."
  type        = list(string)
  default     = []
}

# PostgreSQL

variable "postgres_version" {
  description = "Major version of the PostgreSQL flexible server."
  type        = string
  default     = "16"
}

variable "postgres_sku_name" {
  description = "Compute tier and size of the PostgreSQL flexible server, for example B_Standard_B2s or GP_Standard_D2ds_v5."
  type        = string
  default     = "GP_Standard_D2ds_v5"
}

variable "postgres_storage_mb" {
  description = "Initial storage of the PostgreSQL flexible server in MiB (it grows automatically)."
  type        = number
  default     = 65536
}

variable "postgres_backup_retention_days" {
  description = "Days of point-in-time-restore backups (7 to 35)."
  type        = number
  default     = 14

  validation {
    condition     = var.postgres_backup_retention_days >= 7 && var.postgres_backup_retention_days <= 35
    error_message = "postgres_backup_retention_days must be between 7 and 35."
  }
}

variable "postgres_geo_redundant_backup_enabled" {
  description = "Whether backups are also kept in the paired region (cannot be changed after creation)."
  type        = bool
  default     = false
}

variable "postgres_high_availability" {
  description = "Whether the server has a zone-redundant standby (General Purpose or Memory Optimized tiers only)."
  type        = bool
  default     = false
}

variable "postgres_administrator_login" {
  description = "Administrator login of the PostgreSQL flexible server."
  type        = string
  default     = "aiplatformadmin"
}

variable "postgres_administrator_password" {
  description = "Administrator password of the PostgreSQL flexible server. Pass it as TF_VAR_postgres_administrator_password from a secret store, never in a .tfvars file; it is ephemeral and write-only, so it stays out of the plan and the state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "postgres_administrator_password_version" {
  description = "Increase it to make Terraform send a new postgres_administrator_password (write-only arguments are not compared with the server)."
  type        = number
  default     = 1
}

# Storage, registry, monitoring

variable "artifacts_replication_type" {
  description = "Replication of the artifacts blob storage account: LRS, ZRS, GRS or GZRS."
  type        = string
  default     = "ZRS"
}

variable "files_replication_type" {
  description = "Replication of the premium Azure Files account behind the ReadWriteMany volume: LRS or ZRS (premium files support no other)."
  type        = string
  default     = "ZRS"

  validation {
    condition     = contains(["LRS", "ZRS"], var.files_replication_type)
    error_message = "Premium FileStorage accounts support LRS or ZRS only."
  }
}

variable "storage_share_quota_gb" {
  description = "Provisioned size of the aiplatform-storage file share in GiB; premium shares bill (and get IOPS) by this size, 100 at least."
  type        = number
  default     = 256

  validation {
    condition     = var.storage_share_quota_gb >= 100
    error_message = "Premium file shares are at least 100 GiB."
  }
}

variable "soft_delete_retention_days" {
  description = "Days a deleted blob, container or file share stays recoverable."
  type        = number
  default     = 14
}

variable "registry_zone_redundancy_enabled" {
  description = "Whether the container registry is zone redundant (only in regions with zones)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the Log Analytics workspace keeps container and control-plane logs (30 to 730)."
  type        = number
  default     = 30

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}
