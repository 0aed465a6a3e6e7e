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

{{- /* The image pull secrets of a pod, from a list of {name: SECRET} (adapterd's imagePullSecrets, or the migration
Job's): nothing when empty */ -}}
{{- define "adapterci.imagePullSecrets" -}}
{{- with . }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The account and security context of a pod, (list $root ACCOUNT TOKEN): the same security context for
adapterd's pod, the migration Job's and the training pods', each with its account and whether it mounts an API token */ -}}
{{- define "adapterci.podSecurity" -}}
{{- $root := index . 0 -}}
serviceAccountName: {{ index . 1 }}
automountServiceAccountToken: {{ index . 2 }}
{{- with $root.Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* The scheduling of the migration Job's pod: each of migration.priorityClassName, .nodeSelector, .tolerations and
.affinity when set, else adapterd's (priorityClassName, nodeSelector, tolerations, affinity), so that the Job lands
where the image can run */ -}}
{{- define "adapterci.migrationScheduling" -}}
{{- with .Values.migration.priorityClassName | default .Values.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
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

{{- /* A ServiceAccount's manifest, (list $root NAME COMPONENT): adapterd's account (COMPONENT ""), the migration
Job's ("migrate"), a pre-install/pre-upgrade hook before the Job deleted with it (serviceaccount.yaml), or the
training pods' ("trainer"), each with the annotations of adapterd's (a cloud identity) */ -}}
{{- define "adapterci.serviceAccount" -}}
{{- $root := index . 0 }}
{{- $component := index . 2 }}
{{- $hook := eq $component "migrate" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ index . 1 }}
  labels:
    {{- include "adapterci.labels" $root | nindent 4 }}
    {{- with $component }}
    app.kubernetes.io/component: {{ . }}
    {{- end }}
  {{- if or $hook $root.Values.serviceAccount.annotations }}
  annotations:
    {{- if $hook }}
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: "-10"
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- end }}
    {{- with $root.Values.serviceAccount.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- /* the hook account: no token by default; the Job's pod says whether it mounts one, as adapterd's does; the
trainer's: none (the trainer calls no Kubernetes API) */}}
automountServiceAccountToken: {{ and (not $component) $root.Values.serviceAccount.automountServiceAccountToken }}
{{- end -}}


{{- /* The Kubernetes executor is on (executor: kubernetes): adapterd trains each run in a Job of its own */ -}}
{{- define "adapterci.kubernetes" -}}
{{- if eq .Values.executor "kubernetes" }}true{{ end -}}
{{- end -}}

{{- /* Whether adapterd's pod mounts an API token: always with the Kubernetes executor (adapterd creates the Jobs),
else serviceAccount.automountServiceAccountToken */ -}}
{{- define "adapterci.adapterdToken" -}}
{{- if include "adapterci.kubernetes" . }}true{{ else }}{{ .Values.serviceAccount.automountServiceAccountToken }}{{ end -}}
{{- end -}}

{{- /* The ServiceAccount the training pods run as: with serviceAccount.create, their own, <fullname>-trainer (the
annotations of adapterd's, no token, no role); else adapterd's existing account, their pod mounting no token */ -}}
{{- define "adapterci.trainerServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- include "adapterci.fullname" . }}-trainer
{{- else }}
{{- include "adapterci.serviceAccountName" . }}
{{- end }}
{{- end -}}

{{- /* What the Kubernetes executor cannot work with, refused naming the values: the training pods cannot mount
adapterd's ReadWriteOnce data volume, so the staging store (kubeStagingUrl, else the registry's /staging) must be an
object store they reach; the Role is bound to adapterd's account, which must not be the namespace's default (every
pod running as it could create Jobs, and so run anything as any account of the namespace) */ -}}
{{- define "adapterci.executorChecks" -}}
{{- if include "adapterci.kubernetes" . }}
{{- if not (or .Values.kubeStagingUrl (hasPrefix "s3://" .Values.registry.url)) }}
{{- $where := "executor kubernetes: the training pods cannot reach a registry in adapterd's pod (registry.url %q; " }}
{{- $fix := "empty: its data volume), where jobs would be staged: set registry.url or kubeStagingUrl to an s3:// URL" }}
{{- fail (printf (print $where $fix) .Values.registry.url) }}
{{- end }}
{{- if not (or .Values.serviceAccount.create .Values.serviceAccount.name) }}
{{- $what := "executor kubernetes with serviceAccount.create false: set serviceAccount.name to the account adapterd" }}
{{- fail (print $what " runs as (the Role that creates Jobs is bound to it, not to the namespace's default account)") }}
{{- end }}
{{- $trainer := include "adapterci.trainerServiceAccountName" . }}
{{- if and .Values.serviceAccount.create (eq (include "adapterci.serviceAccountName" .) $trainer) }}
{{- fail (printf "serviceAccount.name %s is the training pods' own account: choose another" $trainer) }}
{{- end }}
{{- end }}
{{- end -}}

{{- /* The labels of the training pods, and of their Jobs (adapterd labels each Job as its pod): trainer.podLabels
under the chart's name, instance, version and component (not the Deployment's selector labels: the Service must not
pick these pods), so that a release's Jobs are selected by app.kubernetes.io/instance; adapterd adds its own
(managed-by, the run) */ -}}
{{- define "adapterci.trainerPodLabels" -}}
{{- $labels := deepCopy (.Values.trainer.podLabels | default dict) }}
{{- $_ := set $labels "app.kubernetes.io/name" (printf "%s-trainer" .Chart.Name) }}
{{- $_ := set $labels "app.kubernetes.io/instance" .Release.Name }}
{{- $_ := set $labels "app.kubernetes.io/version" .Chart.AppVersion }}
{{- $_ := set $labels "app.kubernetes.io/component" "trainer" }}
{{- toYaml $labels }}
{{- end -}}

{{- /* The Kubernetes executor's pod template (ADAPTERCI_KUBE_JOB_TEMPLATE; docs/kubernetes-executor.md): the
metadata and spec of every training pod. adapterd adds the trainer's args (`train-job --staged URL --run ID`), its
resources (from the pipeline's), its labels and restartPolicy Never; the image's entrypoint runs adapterd. The pod
runs as adapterd's does (security contexts, image and its pull secrets, S3 credentials) but with its own account, no
API token, its own priority and scheduling (trainer.*), and /tmp an emptyDir holding the base model cache
(/tmp/adapterci-bases) and CUDA's. */ -}}
{{- define "adapterci.jobTemplate" -}}
metadata:
  labels:
    {{- include "adapterci.trainerPodLabels" . | nindent 4 }}
  {{- with .Values.trainer.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  {{- include "adapterci.podSecurity" (list . (include "adapterci.trainerServiceAccountName" .) false) | nindent 2 }}
  {{- /* adapterd's image, so adapterd's pull secrets; a priority of their own (training often yields to serving) */}}
  {{- with include "adapterci.imagePullSecrets" .Values.imagePullSecrets | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .Values.trainer.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- with .Values.trainer.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.trainer.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.trainer.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: trainer
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        - name: CUDA_CACHE_PATH
          value: /tmp/cuda-cache
      {{- with .Values.s3CredentialsSecret }}
      envFrom:
        - secretRef:
            name: {{ . }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.trainer.tmpSizeLimit | quote }}
{{- end -}}

{{- /* The serving replicas' selector labels: their own name and component, so that adapterd's Service (the chart's
name and instance) never picks them and theirs picks nothing else */ -}}
{{- define "adapterci.servingSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-serve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: serve
{{- end -}}

{{- /* The serving replicas' pod labels: adapterd's podLabels under their selector labels, which win */ -}}
{{- define "adapterci.servingPodLabels" -}}
{{- $labels := deepCopy (.Values.podLabels | default dict) }}
{{- $_ := set $labels "app.kubernetes.io/name" (printf "%s-serve" .Chart.Name) }}
{{- $_ := set $labels "app.kubernetes.io/instance" .Release.Name }}
{{- $_ := set $labels "app.kubernetes.io/component" "serve" }}
{{- toYaml $labels }}
{{- end -}}

{{- /* What serving replicas cannot work with, refused naming the values: they open the same database and registry as
adapterd from other pods, so SQLite (a file on adapterd's ReadWriteOnce volume) and a registry on that volume (not
s3://) are out */ -}}
{{- define "adapterci.servingChecks" -}}
{{- $replicas := int64 .Values.serving.replicas }}
{{- if not (include "adapterci.postgres" .) }}
{{- $what := "serving.replicas %d: serving replicas share adapterd's database, and SQLite is a file on adapterd's volume:" }}
{{- fail (printf (print $what " set database.url or database.existingSecret (PostgreSQL)") $replicas) }}
{{- end }}
{{- if not (hasPrefix "s3://" .Values.registry.url) }}
{{- $what := "serving.replicas %d: serving replicas pull from adapterd's registry, which registry.url %q keeps on" }}
{{- fail (printf (print $what " adapterd's volume: set registry.url to an s3:// URL") $replicas .Values.registry.url) }}
{{- end }}
{{- end -}}
