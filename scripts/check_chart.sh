#!/usr/bin/env bash
# Checks the Helm chart offline (scripts/test.sh runs it): `helm lint --strict`, the manifests `helm template`
# renders validated against Kubernetes' schemas (kubernetes-validate --strict) for the default values and for
# the values files in charts/adapterci/ci/ (scale-out, Secret-backed settings), adapterd's settings passed as its
# flags, the migration Job rendered only with PostgreSQL, the environment of adapterd and of the Job (secrets only
# by secretKeyRef), and bad values refused by values.schema.json (or the templates) with the field named.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$repo/charts/adapterci"
{ read -r helm; read -r validate; } < <("$repo/scripts/install_helm.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/cache" HELM_CONFIG_HOME="$work/config" HELM_DATA_HOME="$work/data"

fail() { printf 'check_chart: %s\n' "$*" >&2; exit 1; }

# The environment of the Deployment's and the Job's containers in rendered manifests ($1), one line a variable:
# `KIND NAME=VALUE`, `KIND NAME<-secret SECRET/KEY` (secretKeyRef) or `KIND envFrom secret SECRET`. PyYAML comes
# with kubernetes-validate (a dependency of it) in its venv.
env_of() {
  "$(dirname "$validate")/python" - "$1" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc or doc["kind"] not in ("Deployment", "Job"):
        continue
    kind = doc["kind"]
    for container in doc["spec"]["template"]["spec"]["containers"]:
        for var in container.get("env") or []:
            if "valueFrom" in var:
                ref = var["valueFrom"]["secretKeyRef"]
                print(f"{kind} {var['name']}<-secret {ref['name']}/{ref['key']}")
            else:
                print(f"{kind} {var['name']}={var['value']}")
        for source in container.get("envFrom") or []:
            print(f"{kind} envFrom secret {source['secretRef']['name']}")
PY
}

# expect_env FILE [helm args...]: the environment rendered with those values is exactly FILE's lines, in order
expect_env() {
  local expected=$1
  shift
  "$helm" template adapterci "$chart" "$@" >"$work/env.yaml" || fail "helm template $* failed"
  env_of "$work/env.yaml" >"$work/env.txt"
  diff -u "$expected" "$work/env.txt" >&2 \
    || fail "the environment rendered with ${*:-the defaults} differs (- expected, + rendered)"
}

for values in "" "$chart"/ci/*-values.yaml; do
  args=()
  [ -n "$values" ] && args=(-f "$values")
  name=${values:+$(basename "$values")}
  "$helm" lint --strict "$chart" "${args[@]}" >"$work/lint.txt" 2>&1 || { cat "$work/lint.txt" >&2; fail "lint ${name:-defaults}"; }
  "$helm" template adapterci "$chart" "${args[@]}" >"$work/rendered.yaml"
  "$validate" --strict "$work/rendered.yaml" >"$work/validate.txt" 2>&1 \
    || { cat "$work/validate.txt" >&2; fail "the manifests of ${name:-the defaults} do not validate"; }
  printf 'check_chart: %s: lint clean, %s manifests valid\n' "${name:-defaults}" "$(grep -c '^kind:' "$work/rendered.yaml")" >&2
done

# the settings reach adapterd as flags, whole numbers printed whole (a values file's numbers are float64, which
# Go prints as 1e+06), and the migration Job comes with PostgreSQL only, as a hook running adapterci-db migrate
printf 'maxBodyMiB: 1048576\nthreads: 1000000\n' >"$work/big.yaml"
"$helm" template adapterci "$chart" -f "$work/big.yaml" >"$work/rendered.yaml"
for flag in --max-body-mib=1048576 --threads=1000000 --event-retention-days=30 --max-merged-exports=1 \
  --adapter-cache-mib=512 --lease-secs=30; do
  grep -qF -- "- $flag" "$work/rendered.yaml" || fail "the Deployment does not pass $flag"
done
grep -qF 'terminationGracePeriodSeconds: 60' "$work/rendered.yaml" \
  || fail "the Deployment does not leave adapterd 60 s to stop cleanly"
grep -q '^kind: Job' "$work/rendered.yaml" && fail "a migration Job is rendered without database.url"
"$helm" template adapterci "$chart" -f "$chart/ci/scale-out-values.yaml" --show-only templates/migrate-job.yaml \
  >"$work/job.yaml" || fail "no migration Job with database.url set"
for line in 'helm.sh/hook: pre-install,pre-upgrade' \
  'helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded' \
  'command: ["adapterci-db", "migrate"]' 'value: "postgres://adapterci@postgres:5432/adapterci"'; do
  grep -qF -- "$line" "$work/job.yaml" || { cat "$work/job.yaml" >&2; fail "the migration Job lacks $line"; }
done
printf 'check_chart: adapterd flags passed whole, migration Job only with PostgreSQL\n' >&2

# adapterd's and the Job's environment: plain values only for what is not secret; the database URL, webhook secrets
# and the event signing key only by secretKeyRef to the Secret and key named (the key's default when none is)
: >"$work/none.txt"
expect_env "$work/none.txt"
cat >"$work/scale-out.txt" <<'ENV'
Deployment ADAPTERCI_DATABASE_URL=postgres://adapterci@postgres:5432/adapterci
Deployment ADAPTERCI_REGISTRY_URL=s3://adapters/registry
Deployment ADAPTERCI_DATASETS_URL=s3://adapters/datasets
Deployment envFrom secret adapterci-s3
Job ADAPTERCI_DATABASE_URL=postgres://adapterci@postgres:5432/adapterci
ENV
expect_env "$work/scale-out.txt" -f "$chart/ci/scale-out-values.yaml"
cat >"$work/secrets.txt" <<'ENV'
Deployment ADAPTERCI_DATABASE_URL<-secret adapterci-db/postgres-url
Deployment ADAPTERCI_WEBHOOK_SECRET_GITHUB_DATASETS<-secret adapterci-webhooks/github.token
Deployment ADAPTERCI_WEBHOOK_SECRET_HF_DATASETS<-secret adapterci-webhooks/hf-datasets
Deployment ADAPTERCI_EVENT_WEBHOOK_URLS=https://hooks.example.com/adapterci,http://audit.internal:9000/events
Deployment ADAPTERCI_EVENT_WEBHOOK_SECRET<-secret adapterci-events/secret
Deployment ADAPTERCI_LOG=info,adapterci_controller=debug
Job ADAPTERCI_DATABASE_URL<-secret adapterci-db/postgres-url
ENV
expect_env "$work/secrets.txt" -f "$chart/ci/secrets-values.yaml"
grep -q 'postgres://' "$work/env.yaml" && fail "a PostgreSQL URL is rendered with database.existingSecret"
grep -qF 'helm.sh/hook: pre-install,pre-upgrade' "$work/env.yaml" \
  || fail "the migration Job with database.existingSecret is not a hook"
printf '%s ADAPTERCI_DATABASE_URL<-secret adapterci-db/url\n' Deployment Job >"$work/database-secret.txt"
expect_env "$work/database-secret.txt" --set database.existingSecret=adapterci-db
printf 'Deployment ADAPTERCI_EVENT_WEBHOOK_URLS=https://a.example\n' >"$work/unsigned.txt"
expect_env "$work/unsigned.txt" --set 'eventWebhooks.urls={https://a.example}'
printf 'check_chart: environment rendered as expected, secrets only by secretKeyRef\n' >&2

# each bad value is refused, and the error names where it is, every place after the setting (--set-string keeps a
# value a string; --set types it; one setting may set several values, comma separated)
count=0
while IFS='|' read -r flag setting places; do
  if "$helm" template adapterci "$chart" "$flag" "$setting" >"$work/out.txt" 2>&1; then
    fail "$flag $setting was accepted"
  fi
  IFS='|' read -r -a wheres <<<"$places"
  for where in "${wheres[@]}"; do
    grep -qF "$where" "$work/out.txt" \
      || { cat "$work/out.txt" >&2; fail "the error for $setting does not name $where"; }
  done
  count=$((count + 1))
done <<'BAD'
--set-string|database.url=mysql://db/adapterci|'/database/url'
--set-string|registry.url=gs://bucket|'/registry/url'
--set-string|models.smollm2-135m-instruct=models/SmolLM2.gguf|'/models/smollm2-135m-instruct'
--set-string|persistence.size=lots|'/persistence/size'
--set-string|service.type=Ingress|'/service/type'
--set-string|databse.url=postgres://db|additional properties 'databse'
--set|threads=-1|'/threads'
--set|service.port=70000|'/service/port'
--set|eventRetentionDays=-1|'/eventRetentionDays'
--set-string|eventRetentionDays=30|'/eventRetentionDays'
--set|maxMergedExports=0|'/maxMergedExports'
--set-string|maxMergedExports=two|'/maxMergedExports'
--set|maxBodyMiB=0|'/maxBodyMiB'
--set|maxBodyMiB=1.5|'/maxBodyMiB'
--set|adapterCacheMiB=-1|'/adapterCacheMiB'
--set|runLeaseSeconds=0|'/runLeaseSeconds'
--set|terminationGracePeriodSeconds=5|'/terminationGracePeriodSeconds'
--set-string|terminationGracePeriodSeconds=60|'/terminationGracePeriodSeconds'
--set|replicas=2|additional properties 'replicas'
--set-string|database.url=postgres://db/a,database.existingSecret=adapterci-db|'/database/url'|'/database/existingSecret'
--set|database.existingSecret=1|'/database/existingSecret'
--set-string|database.existingSecret=Adapterci_DB|'/database/existingSecret'
--set|database.existingSecretKey=true|'/database/existingSecretKey'
--set-string|database.existingSecretKey=url/password|'/database/existingSecretKey'
--set-string|database.existingSecretKey=..|'/database/existingSecretKey'
--set-string|database.existingSecretKey=|'/database/existingSecretKey'
--set-string|database.password=s3cret|additional properties 'password'
--set-string|s3CredentialsSecret=AWS Keys|'/s3CredentialsSecret'
--set-string|webhookSecrets.hf-datasets=s3cret|'/webhookSecrets/hf-datasets'
--set-string|webhookSecrets.hf-datasets.existingSecretKey=hf|'/webhookSecrets/hf-datasets'|'existingSecret'
--set-string|webhookSecrets.hf-datasets.existingSecret=w,webhookSecrets.hf-datasets.value=s3cret|additional properties 'value'
--set|webhookSecrets.hf-datasets.existingSecret=7|'/webhookSecrets/hf-datasets/existingSecret'
--set-string|webhookSecrets.hf-datasets.existingSecret=w,webhookSecrets.hf-datasets.existingSecretKey=hf datasets|'/webhookSecrets/hf-datasets/existingSecretKey'
--set-string|webhookSecrets.HF_Datasets.existingSecret=adapterci-webhooks|additional properties 'HF_Datasets'
--set-string|webhookSecrets.hf-datasets.existingSecret=w,webhookSecrets.hf_datasets.existingSecret=w|webhookSecrets.hf-datasets and webhookSecrets.hf_datasets
--set-string|eventWebhooks.urls=https://hooks.example.com|'/eventWebhooks/urls'
--set|eventWebhooks.urls={ftp://hooks.example.com}|'/eventWebhooks/urls/0'
--set|eventWebhooks.urls={https://a.example,https://a.example}|'/eventWebhooks/urls'
--set|eventWebhooks.existingSecret=true|'/eventWebhooks/existingSecret'
--set-string|eventWebhooks.existingSecretKey=a:b|'/eventWebhooks/existingSecretKey'
--set-string|eventWebhooks.secret=s3cret|additional properties 'secret'
--set|logFilter=1|'/logFilter'
BAD
printf 'check_chart: %d bad values refused, each naming its field\n' "$count" >&2
