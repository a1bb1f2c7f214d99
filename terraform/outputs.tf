# What the Helm values and the deployment need; all of these are identifiers, not secrets.

output "resource_group_name" {
  description = "Resource group that holds every resource."
  value       = azurerm_resource_group.this.name
}

output "aks_cluster_name" {
  description = "AKS cluster name (az aks get-credentials --resource-group <resource_group_name> --name <aks_cluster_name>)."
  value       = azurerm_kubernetes_cluster.this.name
}

output "aks_oidc_issuer_url" {
  description = "OIDC issuer of the cluster that the federated identity credentials trust."
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "tenant_id" {
  description = "Microsoft Entra tenant of the workload identities (annotation azure.workload.identity/tenant-id)."
  value       = data.azurerm_client_config.current.tenant_id
}

output "registry_login_server" {
  description = "Registry host of the image <registry>/aiplatform-dagster:<tag>."
  value       = azurerm_container_registry.this.login_server
}

output "dagster_workload_identity_client_id" {
  description = "Client id for the azure.workload.identity/client-id annotation of service account aiplatform-dagster."
  value       = azurerm_user_assigned_identity.dagster.client_id
}

output "api_workload_identity_client_id" {
  description = "Client id for the azure.workload.identity/client-id annotation of service account aiplatform-api."
  value       = azurerm_user_assigned_identity.api.client_id
}

output "postgres_fqdn" {
  description = "Private host name of the PostgreSQL flexible server (resolvable inside the virtual network)."
  value       = azurerm_postgresql_flexible_server.this.fqdn
}

output "postgres_administrator_login" {
  description = "Administrator login of the PostgreSQL flexible server; its password is in the Secret aiplatform-postgres."
  value       = azurerm_postgresql_flexible_server.this.administrator_login
}

output "postgres_dagster_database" {
  description = "Database of Dagster's run, event log and schedule storage."
  value       = azurerm_postgresql_flexible_server_database.dagster.name
}

output "postgres_platform_database" {
  description = "Database of the platform's own tables (query log, audit log, agent checkpoints)."
  value       = azurerm_postgresql_flexible_server_database.platform.name
}

output "postgres_mlflow_database" {
  description = "Database of the MLflow tracking server's runs and model registry."
  value       = azurerm_postgresql_flexible_server_database.mlflow.name
}

output "storage_account_name" {
  description = "Premium Azure Files account that backs the ReadWriteMany volume aiplatform-storage."
  value       = azurerm_storage_account.files.name
}

output "storage_share_name" {
  description = "File share mounted at /var/lib/aiplatform/storage through the PVC aiplatform-storage."
  value       = azurerm_storage_share.storage.name
}

output "artifacts_storage_account_name" {
  description = "Blob storage account of the artifacts."
  value       = azurerm_storage_account.artifacts.name
}

output "artifacts_container_name" {
  description = "Blob container of the artifacts."
  value       = azurerm_storage_container.artifacts.name
}

output "key_vault_uri" {
  description = "Key vault URI (for the Secrets Store CSI driver's SecretProviderClass or the SDK)."
  value       = azurerm_key_vault.this.vault_uri
}

output "key_vault_name" {
  description = "Key vault name (keyvaultName of a SecretProviderClass)."
  value       = azurerm_key_vault.this.name
}
