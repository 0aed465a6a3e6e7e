#!/usr/bin/env bash
# Checks the Helm chart offline (scripts/test.sh runs it): `helm lint --strict`, the manifests `helm template`
# renders validated against Kubernetes' schemas (kubernetes-validate --strict) for the default values and for
# the scale-out values in charts/adapterci/ci/, and bad values refused by values.schema.json with the field named.
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
BAD
printf 'check_chart: %d bad values refused, each naming its field\n' "$count" >&2
