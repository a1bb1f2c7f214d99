resource "azurerm_kubernetes_cluster" "this" {
  name                      = "aks-${local.name}"
  location                  = azurerm_resource_group.this.location
  resource_group_name       = azurerm_resource_group.this.name
  node_resource_group       = "rg-${local.name}-aks-nodes"
  dns_prefix                = local.name
  kubernetes_version        = var.kubernetes_version
  sku_tier                  = var.aks_sku_tier
  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"

  # The API server is either private (reachable from the virtual network only) or public but
  # limited to the authorized ranges.
  private_cluster_enabled = var.api_server_private

  dynamic "api_server_access_profile" {
    for_each = var.api_server_private ? [] : [var.api_server_authorized_ip_ranges]

    content {
      authorized_ip_ranges = api_server_access_profile.value
    }
  }

  # Pods get Microsoft Entra tokens for their user-assigned identities (identity.tf).
  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  # Azure Policy for Kubernetes (Gatekeeper): policy assignments, such as the pod security
  # baseline, can then audit or deny what the cluster admits.
  azure_policy_enabled = true

  # Sign-in with Microsoft Entra ID only, authorised by Azure RBAC; no static kubeconfig.
  local_account_disabled            = true
  role_based_access_control_enabled = true

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled     = true
    tenant_id              = data.azurerm_client_config.current.tenant_id
    admin_group_object_ids = var.aks_admin_group_object_ids
  }

  # The system pool runs only critical add-ons (CoreDNS, metrics-server, CSI drivers): it
  # carries the CriticalAddonsOnly taint, so the platform's pods go to the user pools.
  # max_pods, here and on the user pools, is Azure CNI overlay's default written out: pods
  # take overlay addresses (var.pod_cidr), not the subnet's.
  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_pool_vm_size
    vnet_subnet_id               = azurerm_subnet.aks.id
    orchestrator_version         = var.kubernetes_version
    only_critical_addons_enabled = true
    auto_scaling_enabled         = true
    min_count                    = var.system_pool_min_count
    max_count                    = var.system_pool_max_count
    zones                        = var.availability_zones
    os_sku                       = "AzureLinux"
    max_pods                     = 250
    temporary_name_for_rotation  = "systemtmp"
    tags                         = local.tags

    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.aks.id]
  }

  # The nodes pull images with this identity; it alone holds AcrPull on the registry.
  kubelet_identity {
    client_id                 = azurerm_user_assigned_identity.kubelet.client_id
    object_id                 = azurerm_user_assigned_identity.kubelet.principal_id
    user_assigned_identity_id = azurerm_user_assigned_identity.kubelet.id
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    pod_cidr            = var.pod_cidr
    service_cidr        = var.service_cidr
    dns_service_ip      = var.dns_service_ip
    load_balancer_sku   = "standard"
    outbound_type       = "loadBalancer"
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.this.id
    msi_auth_for_monitoring_enabled = true
  }

  # Secrets Store CSI driver: pods mount Key Vault secrets with their workload identity.
  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  # Azure Files CSI backs the ReadWriteMany volume (storage class azurefile-csi-premium).
  storage_profile {
    file_driver_enabled = true
    disk_driver_enabled = true
    blob_driver_enabled = false
  }

  tags = local.tags

  lifecycle {
    # The cluster autoscaler owns the node counts.
    ignore_changes = [default_node_pool[0].node_count]
  }

  depends_on = [
    azurerm_role_assignment.aks_kubelet_identity_operator,
    azurerm_role_assignment.aks_subnet_network_contributor,
  ]
}

# General-purpose work: Dagster runs and steps without a GPU, and the serving API.
resource "azurerm_kubernetes_cluster_node_pool" "cpu" {
  name                  = "cpu"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.this.id
  mode                  = "User"
  vm_size               = var.cpu_pool_vm_size
  vnet_subnet_id        = azurerm_subnet.aks.id
  orchestrator_version  = var.kubernetes_version
  auto_scaling_enabled  = true
  min_count             = var.cpu_pool_min_count
  max_count             = var.cpu_pool_max_count
  zones                 = var.availability_zones
  os_sku                = "AzureLinux"
  max_pods              = 250
  tags                  = local.tags

  node_labels = {
    "aiplatform/pool" = "cpu"
  }

  upgrade_settings {
    max_surge = "33%"
  }

  lifecycle {
    ignore_changes = [node_count]
  }
}

# GPU steps only: the taint keeps every pod that does not tolerate nvidia.com/gpu away, and
# the pool scales to zero when no GPU step runs.
resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  name                  = "gpu"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.this.id
  mode                  = "User"
  vm_size               = var.gpu_pool_vm_size
  vnet_subnet_id        = azurerm_subnet.aks.id
  orchestrator_version  = var.kubernetes_version
  auto_scaling_enabled  = true
  min_count             = 0
  max_count             = var.gpu_pool_max_count
  zones                 = var.gpu_pool_zones
  os_sku                = "Ubuntu"
  gpu_driver            = "Install"
  max_pods              = 250
  tags                  = local.tags

  node_labels = {
    "aiplatform/pool" = "gpu"
  }

  node_taints = ["nvidia.com/gpu=present:NoSchedule"]

  upgrade_settings {
    max_surge = "1"
  }

  lifecycle {
    ignore_changes = [node_count]
  }
}
