{{- define "adapterci.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "adapterci.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "adapterci.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* PostgreSQL is configured, by its URL or by the Secret holding it: the migration Job runs */ -}}
{{- define "adapterci.postgres" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end -}}
{{- end -}}

{{- /* ADAPTERCI_DATABASE_URL, for the Deployment and the migration Job alike: from the Secret's key when one is
named (the URL, password included, never enters the manifests), else the plain url; nothing for SQLite */ -}}
{{- define "adapterci.databaseUrlEnv" -}}
{{- if .Values.database.existingSecret }}
- name: ADAPTERCI_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | quote }}
      key: {{ .Values.database.existingSecretKey | default "url" | quote }}
{{- else if .Values.database.url }}
- name: ADAPTERCI_DATABASE_URL
  value: {{ .Values.database.url | quote }}
{{- end }}
{{- end -}}

{{- /* ADAPTERCI_WEBHOOK_SECRET_<NAME> per webhook trigger secret, from its Secret's key. adapterd lowercases the
name and knows it with '_' and with '-', so two names that map to one variable are one secret set twice: refused */ -}}
{{- define "adapterci.webhookSecretsEnv" -}}
{{- $seen := dict }}
{{- range $name, $ref := .Values.webhookSecrets }}
{{- $variable := printf "ADAPTERCI_WEBHOOK_SECRET_%s" ($name | replace "-" "_" | upper) }}
{{- with get $seen $variable }}
{{- $message := "webhookSecrets.%s and webhookSecrets.%s are the same secret to adapterd (%s): keep one" }}
{{- fail (printf $message . $name $variable) }}
{{- end }}
{{- $_ := set $seen $variable $name }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret | quote }}
      key: {{ $ref.existingSecretKey | default $name | quote }}
{{- end }}
{{- end -}}

{{- /* the event webhooks' URLs (plain: they are not secret) and their signing key (from its Secret's key) */ -}}
{{- define "adapterci.eventWebhooksEnv" -}}
{{- with .Values.eventWebhooks.urls }}
- name: ADAPTERCI_EVENT_WEBHOOK_URLS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.eventWebhooks.existingSecret }}
- name: ADAPTERCI_EVENT_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.eventWebhooks.existingSecretKey | default "secret" | quote }}
{{- end }}
{{- end -}}

{{- /* The ServiceAccount adapterd's pod and the migration Job run as: the one created (named by name, else the full
name), or, when none is created, the existing one named (else the namespace's default) */ -}}
{{- define "adapterci.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "adapterci.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end -}}

{{- /* The account and security context of a pod, the same for adapterd's and the migration Job's */ -}}
{{- define "adapterci.podSecurity" -}}
serviceAccountName: {{ include "adapterci.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The ServiceAccount's manifest; $hook: rendered as the pre-install hook copy (serviceaccount.yaml) */ -}}
{{- define "adapterci.serviceAccount" -}}
{{- $root := index . 0 }}
{{- $hook := index . 1 }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "adapterci.serviceAccountName" $root }}
  labels:
    {{- include "adapterci.labels" $root | nindent 4 }}
  {{- if or $hook $root.Values.serviceAccount.annotations }}
  annotations:
    {{- if $hook }}
    helm.sh/hook: pre-install
    helm.sh/hook-weight: "-10"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- end }}
    {{- with $root.Values.serviceAccount.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
{{- end -}}
