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

{{- /* The ServiceAccount adapterd's pod runs as: the one created (named by name, else the full name), or, when none
is created, the existing one named (else the namespace's default) */ -}}
{{- define "adapterci.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "adapterci.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end -}}

{{- /* The ServiceAccount the migration Job runs as: with serviceAccount.create, its own, <fullname>-migrate, a
pre-install/pre-upgrade hook like the Job (serviceaccount.yaml says why); else adapterd's existing account */ -}}
{{- define "adapterci.migrationServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- include "adapterci.fullname" . }}-migrate
{{- else }}
{{- include "adapterci.serviceAccountName" . }}
{{- end }}
{{- end -}}

{{- /* The account and security context of a pod, (list $root ACCOUNT): the same security context, token setting
and (apart from the account's name) identity for adapterd's pod and the migration Job's */ -}}
{{- define "adapterci.podSecurity" -}}
{{- $root := index . 0 -}}
serviceAccountName: {{ index . 1 }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
{{- with $root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The scheduling of the migration Job's pod: each of migration.nodeSelector, .tolerations and .affinity when set,
else adapterd's (nodeSelector, tolerations, affinity), so that the Job lands where the image can run */ -}}
{{- define "adapterci.migrationScheduling" -}}
{{- with .Values.migration.nodeSelector | default .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.migration.affinity | default .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.migration.tolerations | default .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The labels of the migration Job's pod: migration.podLabels when set, else adapterd's podLabels, under the
chart's three, which win (not the Deployment's selector labels: the Service must not pick this pod) */ -}}
{{- define "adapterci.migrationPodLabels" -}}
{{- $labels := deepCopy (.Values.migration.podLabels | default .Values.podLabels | default dict) }}
{{- $_ := set $labels "app.kubernetes.io/name" (printf "%s-migrate" .Chart.Name) }}
{{- $_ := set $labels "app.kubernetes.io/instance" .Release.Name }}
{{- $_ := set $labels "app.kubernetes.io/component" "migrate" }}
{{- toYaml $labels }}
{{- end -}}

{{- /* A ServiceAccount's manifest, (list $root NAME HOOK): adapterd's account (HOOK false), or the migration Job's,
a pre-install/pre-upgrade hook before the Job (HOOK true; serviceaccount.yaml) with the same annotations */ -}}
{{- define "adapterci.serviceAccount" -}}
{{- $root := index . 0 }}
{{- $hook := index . 2 -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ index . 1 }}
  labels:
    {{- include "adapterci.labels" $root | nindent 4 }}
    {{- if $hook }}
    app.kubernetes.io/component: migrate
    {{- end }}
  {{- if or $hook $root.Values.serviceAccount.annotations }}
  annotations:
    {{- if $hook }}
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-10"
    helm.sh/hook-delete-policy: before-hook-creation
    {{- end }}
    {{- with $root.Values.serviceAccount.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- /* the hook account: no token by default; the Job's pod says whether it mounts one, as adapterd's does */}}
automountServiceAccountToken: {{ and (not $hook) $root.Values.serviceAccount.automountServiceAccountToken }}
{{- end -}}
