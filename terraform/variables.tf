variable "subscription_id" {
  type        = string
  description = "Azure subscription that pays for the cluster (a GUID)."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a GUID, for example 00000000-0000-0000-0000-000000000000."
  }
}

variable "tenant_id" {
  type        = string
  description = "Microsoft Entra tenant of the subscription (a GUID)."

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.tenant_id))
    error_message = "tenant_id must be a GUID, for example 00000000-0000-0000-0000-000000000000."
  }
}

variable "name" {
  type        = string
  description = "Base name of every resource: the resource group, the cluster and (without dashes) the registry."
  default     = "rlrings"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "location" {
  type        = string
  description = "Azure region; it must offer the GPU VM size below."
  default     = "westeurope"

  validation {
    condition     = can(regex("^[a-z0-9]+$", var.location))
    error_message = "location must be an Azure region name such as westeurope or eastus2."
  }
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the cluster; the Helm chart is validated against it."
  default     = "1.31"

  validation {
    condition     = can(regex("^1\\.(29|3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version from 1.29 on, such as 1.31 (the chart needs 1.29 or later)."
  }
}

variable "system_vm_size" {
  type        = string
  description = "VM size of the system pool (cluster add-ons only)."
  default     = "Standard_D4ds_v5"
}

variable "gpu_vm_size" {
  type        = string
  description = "VM size of the GPU pool that runs the learner ring: an NC-series size (one learner rank per GPU)."
  default     = "Standard_NC24ads_A100_v4"

  validation {
    condition     = startswith(var.gpu_vm_size, "Standard_NC")
    error_message = "gpu_vm_size must be an NC-series size (Standard_NC...), which has NVIDIA GPUs."
  }
}

variable "gpu_max_nodes" {
  type        = number
  description = "Most GPU nodes the autoscaler may add; the pool scales from zero when no learner runs."
  default     = 4

  validation {
    condition     = var.gpu_max_nodes >= 1 && var.gpu_max_nodes <= 100 && floor(var.gpu_max_nodes) == var.gpu_max_nodes
    error_message = "gpu_max_nodes must be a whole number from 1 to 100."
  }
}

variable "cpu_vm_size" {
  type        = string
  description = "VM size of the CPU pool that runs actors, replay, parameter and viewer."
  default     = "Standard_F16s_v2"
}

variable "cpu_min_nodes" {
  type        = number
  description = "Fewest CPU nodes."
  default     = 1

  validation {
    condition     = var.cpu_min_nodes >= 0 && floor(var.cpu_min_nodes) == var.cpu_min_nodes
    error_message = "cpu_min_nodes must be a whole number, 0 or more."
  }
}

variable "cpu_max_nodes" {
  type        = number
  description = "Most CPU nodes the autoscaler may add."
  default     = 10

  validation {
    condition     = var.cpu_max_nodes >= 1 && var.cpu_max_nodes <= 1000 && floor(var.cpu_max_nodes) == var.cpu_max_nodes
    error_message = "cpu_max_nodes must be a whole number from 1 to 1000."
  }
}

variable "cassandra_vm_size" {
  type        = string
  description = "VM size of the Cassandra pool (memory and local disk for the ring)."
  default     = "Standard_E8ds_v5"
}

variable "cassandra_nodes" {
  type        = number
  description = "Cassandra nodes, one per VM (anti-affinity); 3 or more keeps QUORUM with a node down."
  default     = 3

  validation {
    condition     = var.cassandra_nodes >= 3 && floor(var.cassandra_nodes) == var.cassandra_nodes
    error_message = "cassandra_nodes must be a whole number, 3 or more (replication factor 3 at QUORUM)."
  }
}

variable "api_server_authorized_ip_ranges" {
  type        = list(string)
  description = "CIDR ranges allowed to reach the Kubernetes API: at least the machine running `rlrings cloud` (it passes its own public address)."

  validation {
    condition     = length(var.api_server_authorized_ip_ranges) > 0 && alltrue([for cidr in var.api_server_authorized_ip_ranges : can(cidrhost(cidr, 0))])
    error_message = "api_server_authorized_ip_ranges must hold at least one CIDR range, such as 203.0.113.7/32."
  }
}

variable "log_retention_days" {
  type        = number
  description = "Days the Log Analytics workspace keeps cluster logs."
  default     = 30

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be from 30 to 730."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
  default     = { project = "rlrings" }
}
