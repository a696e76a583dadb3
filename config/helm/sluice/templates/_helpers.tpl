{{/*
The chart name, or nameOverride.
*/}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: fullnameOverride, or the release name when it holds the
chart name (release "sluice" names the objects as config/default does), or <release>-<chart>.
Cut at 47 characters: the longest suffix the chart adds is 16 (-manager-metrics, a Service,
whose name may not exceed 63).
*/}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels that select the manager's pods: the name and the release. With the component,
two releases in one namespace never select each other's pods.
*/}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The labels of every object. Call with (dict "ctx" $ "component" "manager"); the component is
left out when empty.
*/}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" .ctx }}
{{ include "sluice.selectorLabels" .ctx }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- with .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/*
The labels the manager puts on every runner and forget Job pod (controllers/job.go): what the
PodMonitor and the NetworkPolicies select. They carry no release label: the manager makes
those pods, not Helm.
*/}}
{{- define "sluice.runnerSelectorLabels" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/component: runner
app.kubernetes.io/managed-by: sluice
{{- end }}

{{/*
The manager's service account.
*/}}
{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-manager" (include "sluice.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ConfigMap holding the operator configuration.
*/}}
{{- define "sluice.configMapName" -}}
{{- printf "%s-config" (include "sluice.fullname" .) }}
{{- end }}

{{/*
The Sluice image, for the manager and (unless config.runner.image says otherwise) the runners.
*/}}
{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The key of the configuration file in the ConfigMap, and where the manager reads it.
*/}}
{{- define "sluice.configKey" -}}config.yaml{{- end }}

{{/*
The operator configuration document: config from the values, with what the chart decides.
*/}}
{{- define "sluice.operatorConfig" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $runner := deepCopy (default dict $cfg.runner) }}
{{- if not $runner.image }}
{{- $_ := set $runner "image" (include "sluice.image" .) }}
{{- end }}
{{- $_ := set $runner "configMapName" (include "sluice.configMapName" .) }}
{{- $_ := set $runner "configMapKey" (include "sluice.configKey" .) }}
{{- $_ := set $cfg "runner" $runner }}
{{- $_ := set $cfg "apiVersion" "config.etl.sluice.dev/v1alpha1" }}
{{- $_ := set $cfg "kind" "OperatorConfig" }}
{{- toYaml $cfg }}
{{- end }}

{{/*
One document of a manifest file the chart embeds (files/), by kind: (dict "ctx" $ "file"
"files/manager-role.yaml" "kind" "ClusterRole").
*/}}
{{- define "sluice.embedded" -}}
{{- $found := dict }}
{{- range (.ctx.Files.Get .file | splitList "\n---") }}
{{- $doc := fromYaml . }}
{{- if and $doc (eq (get $doc "kind") $.kind) }}
{{- $found = $doc }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "%s holds no %s" .file .kind) }}
{{- end }}
{{- toYaml $found }}
{{- end }}
