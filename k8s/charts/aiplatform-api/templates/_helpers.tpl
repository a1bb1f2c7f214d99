{{/*
Every object is named after the chart: `aiplatform-api` is the ServiceAccount the workload
identity is federated with, and the job name the alerts in k8s/monitoring/ match on.
*/}}
{{- define "aiplatform-api.name" -}}
{{- .Chart.Name -}}
{{- end }}

{{- define "aiplatform-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aiplatform-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aiplatform-api.labels" -}}
{{ include "aiplatform-api.selectorLabels" . }}
app.kubernetes.io/component: serving-api
app.kubernetes.io/part-of: aiplatform
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "aiplatform-api.image" -}}
{{- $registry := required "image.registry is required (the ACR login server)" .Values.image.registry -}}
{{- $tag := required "image.tag is required (an immutable image tag)" .Values.image.tag -}}
{{- printf "%s/%s:%s" $registry .Values.image.repository $tag -}}
{{- end }}

{{/* A password-less DSN: libpq takes the password from PGPASSWORD. */}}
{{- define "aiplatform-api.postgresDsn" -}}
{{- with .Values.postgresql -}}
{{- $host := required "postgresql.host is required when postgresql.enabled" .host -}}
{{- printf "postgresql://%s@%s:%v/%s?sslmode=%s" .user $host .port .database .sslmode -}}
{{- end -}}
{{- end }}

{{/* The migration Job's pods: not the API's selector labels, so no Service, PDB or
NetworkPolicy of the API selects them. */}}
{{- define "aiplatform-api.migrationLabels" -}}
app.kubernetes.io/name: {{ include "aiplatform-api.name" . }}-agent-store-migration
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent-store-migration
app.kubernetes.io/part-of: aiplatform
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
