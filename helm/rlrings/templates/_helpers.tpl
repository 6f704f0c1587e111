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

{{/* What every planning service is told (actor, learner, replay): the game, the settings the user
gave the algorithm (none: the registry's default algorithm at its defaults), the learner's table and the
mesh's shape. Each service derives its own share from them as rlrings up's processes do
(rlrings/core/shape.py): one planner for the laptop and the cluster. */}}
{{- define "rlrings.plannedSettings" -}}
env: {{ .Values.env | quote }}
algorithm: {{ .Values.algorithm | toJson }}
table: {{ .Values.table }}
mesh:
  actors: {{ .Values.actor.replicas }}
  envs_per_actor: {{ .Values.actor.numEnvs }}
  learners: {{ .Values.learner.ring.ranks }}
  batch_size: {{ .Values.learner.batchSize | toJson }}
  max_env_steps: {{ .Values.maxEnvSteps | int64 }}
  epsilon_decay_env_steps: {{ .Values.epsilonDecayEnvSteps | int64 }}
  seed: {{ .Values.seed | int64 }}
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

{{/* The config file (RLRINGS_<SERVICE>_CONFIG below), a writable /tmp under a read-only root,
and the TLS and token Secrets when security is on. */}}
{{- define "rlrings.serverMounts" -}}
- {name: config, mountPath: /etc/rlrings, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- if .Values.security.tls.enabled }}
- {name: tls, mountPath: /etc/rlrings-tls, readOnly: true}
{{- end }}
{{- if .Values.security.auth.enabled }}
- {name: auth, mountPath: /etc/rlrings-auth, readOnly: true}
{{- end }}
{{- end }}

{{/* Volumes behind rlrings.serverMounts: (dict "root" $ "name" <the component's ConfigMap> "component" <its name>);
with security.tls.perComponent, a component that calls others (one of security.componentScopes) mounts its own certificate. */}}
{{- define "rlrings.serverVolumes" -}}
- name: config
  configMap:
    name: {{ .name }}
- name: tmp
  emptyDir: {}
{{- $component := .component }}
{{- with .root.Values.security }}
{{- if .tls.enabled }}
{{- $secret := required "security.tls.secretName: name the kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt)" .tls.secretName }}
- name: tls
  secret:
    secretName: {{ ternary (printf "%s-%s" $secret $component) $secret (and .tls.perComponent (hasKey .componentScopes $component)) }}
    defaultMode: 0440
{{- end }}
{{- if .auth.enabled }}
- name: auth
  secret:
    secretName: {{ required "security.auth.secretName: name the Secret holding the tokens file" .auth.secretName }}
    defaultMode: 0440
    items:
      - {key: {{ .auth.tokensKey }}, path: tokens.yaml}
{{- end }}
{{- end }}
{{- end }}

{{/* How a process dials and is dialled when security is on: (dict "root" $ "prefix" "REPLAY" "serves" true) */}}
{{- define "rlrings.securityEnv" -}}
{{- $s := .root.Values.security }}
{{- if $s.tls.enabled }}
- name: RLRINGS_{{ .prefix }}_TLS__CA_FILE
  value: /etc/rlrings-tls/ca.crt
{{- if or .serves $s.tls.mutual }}
- name: RLRINGS_{{ .prefix }}_TLS__CERT_FILE
  value: /etc/rlrings-tls/tls.crt
- name: RLRINGS_{{ .prefix }}_TLS__KEY_FILE
  value: /etc/rlrings-tls/tls.key
{{- end }}
- name: RLRINGS_{{ .prefix }}_TLS__MUTUAL
  value: {{ $s.tls.mutual | quote }}
{{- if .serves }}
- name: RLRINGS_{{ .prefix }}_HEALTH_PORT
  value: {{ $s.tls.healthPort | quote }}
{{- end }}
{{- end }}
{{- if and .serves $s.tls.enabled $s.tls.mutual $s.tls.perComponent }}
- name: RLRINGS_{{ .prefix }}_AUTH__CERTIFICATE_SCOPES
  value: {{ $s.componentScopes | toJson | quote }}
{{- end }}
{{- if $s.auth.enabled }}
{{- if .serves }}
- name: RLRINGS_{{ .prefix }}_AUTH__TOKENS_FILE
  value: /etc/rlrings-auth/tokens.yaml
{{- end }}
{{- $tokenKey := get $s.auth.componentTokenKeys (lower .prefix) | default $s.auth.internalTokenKey }}
{{- if $tokenKey }}
- name: RLRINGS_{{ .prefix }}_AUTH__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $s.auth.secretName }}
      key: {{ $tokenKey }}
{{- end }}
{{- end }}
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
{{- include "rlrings.securityEnv" (dict "root" .root "prefix" .prefix "serves" true) }}
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
{{- /* the kubelet's gRPC probes speak no TLS: with TLS on they ask the plaintext health-only port */}}
{{- $probePort := .values.port }}
{{- if .root.Values.security.tls.enabled }}
{{- $probePort = .root.Values.security.tls.healthPort }}
  - name: health
    containerPort: {{ $probePort }}
{{- end }}
livenessProbe:
  grpc:
    port: {{ $probePort }}
    service: liveness
  initialDelaySeconds: {{ .root.Values.probes.initialDelaySeconds }}
  periodSeconds: {{ .root.Values.probes.periodSeconds }}
  failureThreshold: {{ .root.Values.probes.failureThreshold }}
readinessProbe:
  grpc:
    port: {{ $probePort }}
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
