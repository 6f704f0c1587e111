# AKS for rlrings: a system pool for add-ons, a tainted NC-series GPU pool for the
# learner ring (autoscaling from zero), a CPU pool for actors and the services, a
# pool for Cassandra, a container registry the cluster pulls from, and workload
# identity for pods that call Azure.

locals {
  registry_name = substr(replace("${var.name}acr${random_string.suffix.result}", "-", ""), 0, 50)
  # The taint the Helm chart's learner tolerates (learner.tolerations in values.yaml).
  gpu_taint = "nvidia.com/gpu=present:NoSchedule"
}

resource "random_string" "suffix" {
  length  = 6
  upper   = false
  special = false
}

resource "azurerm_resource_group" "main" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = var.tags
}

resource "azurerm_log_analytics_workspace" "main" {
  name                = "${var.name}-logs"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_container_registry" "main" {
  #checkov:skip=CKV_AZURE_139:The registry takes `az acr build` uploads from the user's machine; access is by Entra ID only (admin disabled).
  #checkov:skip=CKV_AZURE_165:Geo-replication is for multi-region serving; one training cluster pulls from one region.
  #checkov:skip=CKV_AZURE_166:Quarantine needs a scanner that releases images; rlrings builds its own images in this registry.
  #checkov:skip=CKV_AZURE_233:Zone redundancy is unavailable in some regions with NC-series GPUs; images can be rebuilt from source.
  #checkov:skip=CKV_AZURE_164:Content trust (Notary v1) is deprecated by Azure; images are pinned by tag and built in the registry.
  #checkov:skip=CKV_AZURE_237:Dedicated data endpoints matter with firewall rules, which this public registry does not use.
  name                          = local.registry_name
  resource_group_name           = azurerm_resource_group.main.name
  location                      = azurerm_resource_group.main.location
  sku                           = "Premium"
  admin_enabled                 = false
  public_network_access_enabled = true
  retention_policy_in_days      = 7
  tags                          = var.tags
}

resource "azurerm_user_assigned_identity" "workload" {
  name                = "${var.name}-workload"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = var.tags
}

resource "azurerm_kubernetes_cluster" "main" {
  #checkov:skip=CKV_AZURE_6:Authorized ranges are set from var.api_server_authorized_ip_ranges, required and validated non-empty; checkov cannot resolve a variable without a default.
  #checkov:skip=CKV_AZURE_115:A private API server would need a VPN or jump host; access is limited by authorized IP ranges instead.
  #checkov:skip=CKV_AZURE_117:A customer-managed disk encryption key needs a Key Vault this stack does not manage; disks use platform-managed keys.
  #checkov:skip=CKV_AZURE_226:Ephemeral OS disks do not fit every VM size offered through the variables; managed OS disks are used.
  name                              = "${var.name}-aks"
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  dns_prefix                        = var.name
  kubernetes_version                = var.kubernetes_version
  sku_tier                          = "Standard"
  automatic_upgrade_channel         = "patch"
  node_os_upgrade_channel           = "NodeImage"
  local_account_disabled            = true
  role_based_access_control_enabled = true
  oidc_issuer_enabled               = true
  workload_identity_enabled         = true
  azure_policy_enabled              = true
  tags                              = var.tags

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    auto_scaling_enabled         = true
    min_count                    = 1
    max_count                    = 3
    max_pods                     = 110
    only_critical_addons_enabled = true
    host_encryption_enabled      = true
    zones                        = ["1", "2", "3"]
    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled = true
    tenant_id          = var.tenant_id
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_server_authorized_ip_ranges
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    # Calico enforces the chart's NetworkPolicies (only replay reaches Cassandra).
    network_policy = "calico"
  }

  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.main.id
    msi_auth_for_monitoring_enabled = true
  }

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  lifecycle {
    ignore_changes = [default_node_pool[0].node_count]
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  name                    = "gpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.main.id
  vm_size                 = var.gpu_vm_size
  auto_scaling_enabled    = true
  min_count               = 0
  max_count               = var.gpu_max_nodes
  max_pods                = 50
  host_encryption_enabled = true
  node_labels             = { agentpool = "gpu" }
  node_taints             = [local.gpu_taint]
  tags                    = var.tags
}

resource "azurerm_kubernetes_cluster_node_pool" "cpu" {
  name                    = "cpu"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.main.id
  vm_size                 = var.cpu_vm_size
  auto_scaling_enabled    = true
  min_count               = var.cpu_min_nodes
  max_count               = var.cpu_max_nodes
  max_pods                = 110
  host_encryption_enabled = true
  node_labels             = { agentpool = "cpu" }
  tags                    = var.tags
}

resource "azurerm_kubernetes_cluster_node_pool" "cassandra" {
  name                    = "cassandra"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.main.id
  vm_size                 = var.cassandra_vm_size
  node_count              = var.cassandra_nodes
  max_pods                = 50
  host_encryption_enabled = true
  zones                   = ["1", "2", "3"]
  node_labels             = { agentpool = "cassandra" }
  tags                    = var.tags
}

# The kubelet pulls rlrings images from the registry without credentials.
resource "azurerm_role_assignment" "kubelet_acr_pull" {
  scope                            = azurerm_container_registry.main.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}

# Pods running as the rlrings service account act as this identity (workload identity).
resource "azurerm_federated_identity_credential" "workload" {
  name                = "${var.name}-workload"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.workload.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.main.oidc_issuer_url
  subject             = "system:serviceaccount:rlrings:rlrings"
}
