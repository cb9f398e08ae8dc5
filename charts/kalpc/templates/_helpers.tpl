{{/*
Names. Every object name derives from kalpc.fullname, so that the flags the
operator gets (Service, webhook configuration, Secret, sidecar ClusterRole,
Lease) always name the objects this chart creates.
*/}}

{{- define "kalpc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kalpc.fullname" -}}
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

{{- define "kalpc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kalpc.operator.fullname" -}}
{{- printf "%s-operator" (include "kalpc.fullname" .) }}
{{- end }}

{{- define "kalpc.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "kalpc.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kalpc.leaseName" -}}
{{- default (printf "%s-operator.kalpc.io" (include "kalpc.fullname" .)) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{- define "kalpc.webhook.serviceName" -}}
{{- printf "%s-webhook" (include "kalpc.fullname" .) }}
{{- end }}

{{- define "kalpc.webhook.configurationName" -}}
{{- printf "%s-sidecar-injector" (include "kalpc.fullname" .) }}
{{- end }}

{{- define "kalpc.webhook.secretName" -}}
{{- default (printf "%s-webhook-tls" (include "kalpc.fullname" .)) .Values.webhook.certificate.secretName }}
{{- end }}

{{- define "kalpc.webhook.certificateName" -}}
{{- printf "%s-webhook" (include "kalpc.fullname" .) }}
{{- end }}

{{- define "kalpc.sidecar.clusterRoleName" -}}
{{- printf "%s-sidecar" (include "kalpc.fullname" .) }}
{{- end }}

{{- define "kalpc.nodePrep.fullname" -}}
{{- printf "%s-nodeprep" (include "kalpc.fullname" .) }}
{{- end }}

{{- define "kalpc.certManager" -}}
{{- if eq .Values.webhook.certificate.provider "cert-manager" }}true{{ end }}
{{- end }}

{{/*
Labels.
*/}}

{{- define "kalpc.labels" -}}
helm.sh/chart: {{ include "kalpc.chart" . }}
app.kubernetes.io/name: {{ include "kalpc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kalpc
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* kalpc.selectorLabels takes (dict "ctx" $ "component" "operator"). */}}
{{- define "kalpc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kalpc.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* kalpc.componentLabels takes (dict "ctx" $ "component" "operator"). */}}
{{- define "kalpc.componentLabels" -}}
{{ include "kalpc.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
kalpc.image takes (dict "image" .Values.x.image "ctx" $) and returns
repository@digest, or repository:tag with the tag defaulting to appVersion.
*/}}
{{- define "kalpc.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
kalpc.quantity prints a resource quantity from values, or nothing.
*/}}
{{- define "kalpc.quantity" -}}
{{- if kindIs "float64" . }}{{ . | toString }}{{ else if . }}{{ . }}{{ end }}
{{- end }}

{{/*
kalpc.excludedNamespaces lists the namespaces never injected, with the
release namespace.
*/}}
{{- define "kalpc.excludedNamespaces" -}}
{{- $ns := list -}}
{{- range .Values.webhook.excludedNamespaces }}{{ $ns = append $ns . }}{{ end -}}
{{- $ns = append $ns .Release.Namespace -}}
{{- toYaml ($ns | uniq) }}
{{- end }}

{{/*
Checks of values that the JSON schema cannot express.
*/}}
{{- define "kalpc.validate" -}}
{{- if and (gt (int .Values.operator.replicaCount) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "operator.replicaCount > 1 requires operator.leaderElection.enabled=true: only one replica may reconcile" }}
{{- end }}
{{- if eq (int .Values.webhook.port) (int .Values.operator.healthPort) }}
{{- fail "webhook.port and operator.healthPort must differ" }}
{{- end }}
{{- if and .Values.metrics.enabled (or (eq (int .Values.metrics.port) (int .Values.webhook.port)) (eq (int .Values.metrics.port) (int .Values.operator.healthPort))) }}
{{- fail "metrics.port must differ from webhook.port and operator.healthPort" }}
{{- end }}
{{- if eq (int .Values.sidecar.healthPort) (int .Values.sidecar.metricsPort) }}
{{- fail "sidecar.healthPort and sidecar.metricsPort must differ" }}
{{- end }}
{{- end }}

{{/*
How the node directory reaches the sidecar (sidecar.nodeVolume): csi needs
the node DaemonSet, which serves the driver.
*/}}
{{- define "kalpc.nodeVolume" -}}
{{- if and (eq .Values.sidecar.nodeVolume "csi") (not .Values.nodePrep.enabled) }}
{{- fail "sidecar.nodeVolume=csi needs nodePrep.enabled=true: the kalpc-nodeprep DaemonSet serves the CSI driver (or set sidecar.nodeVolume=hostPath)" }}
{{- end }}
{{- .Values.sidecar.nodeVolume }}
{{- end }}

{{/* The name of kalpc's CSI driver (internal/csidriver.DefaultName). */}}
{{- define "kalpc.csiDriverName" -}}
csi.kalpc.io
{{- end }}
