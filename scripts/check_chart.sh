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

# each bad value is refused, and the error names where it is
while IFS='|' read -r setting where; do
  if "$helm" template adapterci "$chart" --set-string "$setting" >"$work/out.txt" 2>&1; then
    fail "--set-string $setting was accepted"
  fi
  grep -qF "$where" "$work/out.txt" || { cat "$work/out.txt" >&2; fail "the error for $setting does not name $where"; }
done <<'BAD'
database.url=mysql://db/adapterci|'/database/url'
registry.url=gs://bucket|'/registry/url'
models.smollm2-135m-instruct=models/SmolLM2.gguf|'/models/smollm2-135m-instruct'
persistence.size=lots|'/persistence/size'
service.type=Ingress|'/service/type'
databse.url=postgres://db|additional properties 'databse'
BAD
while IFS='|' read -r setting where; do
  if "$helm" template adapterci "$chart" --set "$setting" >"$work/out.txt" 2>&1; then
    fail "--set $setting was accepted"
  fi
  grep -qF "$where" "$work/out.txt" || { cat "$work/out.txt" >&2; fail "the error for $setting does not name $where"; }
done <<'BAD'
threads=-1|'/threads'
service.port=70000|'/service/port'
BAD
printf 'check_chart: 8 bad values refused, each naming its field\n' >&2
