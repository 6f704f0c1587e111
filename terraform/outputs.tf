output "resource_group" {
  description = "Resource group that holds every resource of the stack."
  value       = azurerm_resource_group.main.name
}

output "cluster_name" {
  description = "Name of the AKS cluster (for az aks get-credentials)."
  value       = azurerm_kubernetes_cluster.main.name
}

output "registry_name" {
  description = "Name of the container registry (for az acr build)."
  value       = azurerm_container_registry.main.name
}

output "registry_login_server" {
  description = "Registry host the Helm chart pulls images from (image.registry)."
  value       = azurerm_container_registry.main.login_server
}

output "oidc_issuer_url" {
  description = "OIDC issuer of the cluster, for more federated identities."
  value       = azurerm_kubernetes_cluster.main.oidc_issuer_url
}

output "workload_identity_client_id" {
  description = "Client ID that the rlrings service account is annotated with (azure.workload.identity/client-id)."
  value       = azurerm_user_assigned_identity.workload.client_id
}

output "kube_config" {
  description = "Kubeconfig of the cluster (Entra ID login through kubelogin); prefer az aks get-credentials."
  value       = azurerm_kubernetes_cluster.main.kube_config_raw
  sensitive   = true
}
