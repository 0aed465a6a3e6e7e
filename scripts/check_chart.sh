#!/usr/bin/env bash
# Checks the Helm chart offline (scripts/test.sh runs it): `helm lint --strict`, the manifests `helm template`
# renders validated against Kubernetes' schemas (kubernetes-validate --strict) for the default values and for
# the scale-out values in charts/adapterci/ci/, adapterd's settings passed as its flags, the migration Job rendered
# only with PostgreSQL, and bad values refused by values.schema.json with the field named.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$repo/charts/adapterci"
{ read -r helm; read -r validate; } < <("$repo/scripts/install_helm.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/cache" HELM_CONFIG_HOME="$work/config" HELM_DATA_HOME="$work/data"

fail() { printf 'check_chart: %s\n' "$*" >&2; exit 1; }

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
grep -q '^kind: Job' "$work/rendered.yaml" && fail "a migration Job is rendered without database.url"
"$helm" template adapterci "$chart" -f "$chart/ci/scale-out-values.yaml" --show-only templates/migrate-job.yaml \
  >"$work/job.yaml" || fail "no migration Job with database.url set"
for line in 'helm.sh/hook: pre-install,pre-upgrade' \
  'helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded' \
  'command: ["adapterci-db", "migrate"]' 'value: "postgres://adapterci@postgres:5432/adapterci"'; do
  grep -qF -- "$line" "$work/job.yaml" || { cat "$work/job.yaml" >&2; fail "the migration Job lacks $line"; }
done
printf 'check_chart: adapterd flags passed whole, migration Job only with PostgreSQL\n' >&2

# each bad value is refused, and the error names where it is (--set-string keeps a value a string; --set types it)
count=0
while IFS='|' read -r flag setting where; do
  if "$helm" template adapterci "$chart" "$flag" "$setting" >"$work/out.txt" 2>&1; then
    fail "$flag $setting was accepted"
  fi
  grep -qF "$where" "$work/out.txt" || { cat "$work/out.txt" >&2; fail "the error for $setting does not name $where"; }
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
--set|replicas=2|additional properties 'replicas'
BAD
printf 'check_chart: %d bad values refused, each naming its field\n' "$count" >&2
