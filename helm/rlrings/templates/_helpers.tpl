{{/*
Names, labels and the pieces every rlrings workload shares. A component is one
of: replay, parameter, learner, actor, viewer, cassandra.
*/}}

{{- define "rlrings.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name; components append "-<component>". */}}
{{- define "rlrings.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of one component's objects: (dict "root" $ "component" "replay") */}}
{{- define "rlrings.component.fullname" -}}
{{- printf "%s-%s" (include "rlrings.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rlrings.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rlrings.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlrings.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "rlrings.labels" -}}
helm.sh/chart: {{ include "rlrings.chart" .root }}
{{ include "rlrings.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: rlrings
{{- end }}

{{/* An rlrings image, pinned by tag (or digest): (dict "root" $ "image" .Values.replay.image) */}}
{{- define "rlrings.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := default .root.Values.image.tag .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s/%s@%s" $registry .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $registry .image.repository $tag -}}
{{- end -}}
{{- end }}

{{/* In-cluster gRPC address of a component's Service: (dict "root" $ "component" "replay" "port" 8000) */}}
{{- define "rlrings.address" -}}
{{- printf "%s.%s.svc:%v" (include "rlrings.component.fullname" .) .root.Release.Namespace .port -}}
{{- end }}

{{- define "rlrings.replayAddress" -}}
{{- include "rlrings.address" (dict "root" . "component" "replay" "port" .Values.replay.port) -}}
{{- end }}

{{- define "rlrings.parameterAddress" -}}
{{- include "rlrings.address" (dict "root" . "component" "parameter" "port" .Values.parameter.port) -}}
{{- end }}

{{/* Cassandra contact points: the chart's own ring, or the external cluster's. */}}
{{- define "rlrings.cassandra.contactPoints" -}}
{{- if .Values.cassandra.enabled -}}
{{- $name := include "rlrings.component.fullname" (dict "root" . "component" "cassandra") -}}
{{- $points := list -}}
{{- range $i := until (int .Values.cassandra.replicas) -}}
{{- $points = append $points (printf "%s-%d.%s-headless.%s.svc" $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- toJson $points -}}
{{- else -}}
{{- toJson .Values.cassandra.external.contactPoints -}}
{{- end -}}
{{- end }}

{{/* Prometheus scrape annotations for a pod: (dict "root" $ "port" 9000) */}}
{{- define "rlrings.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Pod-level settings every rlrings pod shares: registry credentials and the security context. */}}
{{- define "rlrings.podDefaults" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* The config file (RLRINGS_<SERVICE>_CONFIG below) and a writable /tmp under a read-only root. */}}
{{- define "rlrings.serverMounts" -}}
- {name: config, mountPath: /etc/rlrings, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- end }}

{{/* Volumes behind rlrings.serverMounts; the argument is the component's ConfigMap name. */}}
{{- define "rlrings.serverVolumes" -}}
- name: config
  configMap:
    name: {{ . }}
- name: tmp
  emptyDir: {}
{{- end }}

{{/* Settings every rlrings server takes from the environment: (dict "root" $ "prefix" "REPLAY" "values" .Values.replay) */}}
{{- define "rlrings.serverEnv" -}}
- name: RLRINGS_{{ .prefix }}_HOST
  value: "0.0.0.0"
- name: RLRINGS_{{ .prefix }}_PORT
  value: {{ .values.port | quote }}
- name: RLRINGS_{{ .prefix }}_METRICS_PORT
  value: {{ .values.metricsPort | quote }}
- name: RLRINGS_{{ .prefix }}_CONFIG
  value: /etc/rlrings/config.yaml
- name: RLRINGS_{{ .prefix }}_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
{{- end }}

{{/* Container ports, native gRPC probes, security context and config mount of an rlrings server. */}}
{{- define "rlrings.serverContainer" -}}
ports:
  - name: grpc
    containerPort: {{ .values.port }}
  - name: metrics
    containerPort: {{ .values.metricsPort }}
{{- with .extraPorts }}
{{- toYaml . | nindent 2 }}
{{- end }}
livenessProbe:
  grpc:
    port: {{ .values.port }}
    service: liveness
  initialDelaySeconds: {{ .root.Values.probes.initialDelaySeconds }}
  periodSeconds: {{ .root.Values.probes.periodSeconds }}
  failureThreshold: {{ .root.Values.probes.failureThreshold }}
readinessProbe:
  grpc:
    port: {{ .values.port }}
  periodSeconds: {{ .root.Values.probes.periodSeconds }}
securityContext:
  {{- toYaml .root.Values.containerSecurityContext | nindent 2 }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
{{- end }}

{{/* Pod-level scheduling from a component's values: nodeSelector, tolerations, affinity. */}}
{{- define "rlrings.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
