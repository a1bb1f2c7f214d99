{{/*
Every object is named after the chart: the Service `aiplatform-mlflow` is the host in the
platform's AIPLATFORM_MLFLOW_TRACKING_URI.
*/}}
{{- define "aiplatform-mlflow.name" -}}
{{- .Chart.Name -}}
{{- end }}

{{- define "aiplatform-mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aiplatform-mlflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The tracking server's pods only: the Service must never pick the migration Job's pod. */}}
{{- define "aiplatform-mlflow.serverSelectorLabels" -}}
{{ include "aiplatform-mlflow.selectorLabels" . }}
app.kubernetes.io/component: tracking-server
{{- end }}

{{- define "aiplatform-mlflow.labels" -}}
{{ include "aiplatform-mlflow.selectorLabels" . }}
app.kubernetes.io/part-of: aiplatform
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "aiplatform-mlflow.image" -}}
{{- $registry := required "image.registry is required (the ACR login server)" .Values.image.registry -}}
{{- $tag := required "image.tag is required (an immutable image tag)" .Values.image.tag -}}
{{- printf "%s/%s:%s" $registry .Values.image.repository $tag -}}
{{- end }}

{{/*
The backend store: a password-less SQLAlchemy URL on psycopg2, whose libpq takes the password
from PGPASSWORD (SQLAlchemy 2 maps a bare postgresql:// to psycopg 3).
*/}}
{{- define "aiplatform-mlflow.backendStoreUri" -}}
{{- with .Values.postgresql -}}
{{- $host := required "postgresql.host is required (terraform output postgres_fqdn)" .host -}}
{{- printf "postgresql+psycopg2://%s@%s:%v/%s?sslmode=%s" .user $host .port .database .sslmode -}}
{{- end -}}
{{- end }}

{{/* Where the server writes the artifacts it proxies (mlflow-artifacts:/ maps onto it). */}}
{{- define "aiplatform-mlflow.artifactsDestination" -}}
{{- with .Values.artifacts -}}
{{- $account := required "artifacts.storageAccount is required (terraform output artifacts_storage_account_name)" .storageAccount -}}
{{- if not (regexMatch "^[a-z0-9]{3,24}$" $account) -}}
{{- fail (printf "artifacts.storageAccount %q is not a storage account name (3-24 lower-case letters and digits)" $account) -}}
{{- end -}}
{{- printf "wasbs://%s@%s.blob.core.windows.net/%s" .container $account (trimAll "/" .path) -}}
{{- end -}}
{{- end }}

{{/*
Host headers the server answers (MLflow refuses others, against DNS rebinding; /health is
exempt, so probes to the pod IP pass): the Service's in-cluster names with and without the
port, localhost for `kubectl port-forward`, and any extra names (an ingress host).
*/}}
{{- define "aiplatform-mlflow.allowedHosts" -}}
{{- $service := include "aiplatform-mlflow.name" . -}}
{{- $port := .Values.containerPort -}}
{{- $hosts := list -}}
{{- range $name := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- $hosts = append $hosts $name -}}
{{- $hosts = append $hosts (printf "%s:%v" $name $port) -}}
{{- end -}}
{{- $hosts = concat $hosts (list "localhost:*" "127.0.0.1:*") .Values.extraAllowedHosts -}}
{{- join "," $hosts -}}
{{- end }}

{{/* PGPASSWORD from the Secret, for the server and the schema migration. */}}
{{- define "aiplatform-mlflow.pgpassword" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.passwordSecret.name }}
      key: {{ .Values.postgresql.passwordSecret.key }}
{{- end }}

{{/* Non-root (the image's uid 10001), nothing writable but the /tmp emptyDir. */}}
{{- define "aiplatform-mlflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "aiplatform-mlflow.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}
