#!/usr/bin/env bash
# Checks the Helm chart offline (scripts/test.sh runs it): `helm lint --strict`, the manifests `helm template`
# renders validated against Kubernetes' schemas (kubernetes-validate --strict) for the default values and for
# the values files in charts/adapterci/ci/ (scale-out, Secret-backed settings, a GPU node pool), adapterd's settings
# passed as its flags, the migration Job rendered only with PostgreSQL, the environment of adapterd and of the Job
# (secrets only by secretKeyRef), the ServiceAccount, security contexts and scheduling of both (the Job running as
# adapterd does), and bad values refused by values.schema.json (or the templates) with the field named.
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

# The account, security and scheduling of what rendered manifests ($1) run, one line a setting: each ServiceAccount
# (`ServiceAccount NAME KEY=VALUE`, with its annotations), the Deployment's and the Job's pod (`KIND pod PATH=VALUE`:
# account, security context, scheduling, labels, annotations) and each of their containers (`KIND CONTAINER
# PATH=VALUE`: security context and GPU limit; `KIND CONTAINER mount PATH<-VOLUME_SOURCE`).
pod_of() {
  "$(dirname "$validate")/python" - "$1" <<'PY'
import json, sys, yaml

def leaves(path, value):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(f"{path}.{key}" if path else key, inner)
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        for index, inner in enumerate(value):
            yield from leaves(f"{path}[{index}]", inner)
    else:
        yield f"{path}={value if isinstance(value, str) else json.dumps(value)}"

for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind == "ServiceAccount":
        account = {"automountServiceAccountToken": doc.get("automountServiceAccountToken")}
        account["annotations"] = doc["metadata"].get("annotations") or {}
        for line in leaves("", account):
            print(f"ServiceAccount {name} {line}")
    if kind not in ("Deployment", "Job"):
        continue
    template = doc["spec"]["template"]
    keys = ("serviceAccountName", "automountServiceAccountToken", "securityContext", "nodeSelector", "tolerations",
            "affinity")
    pod = {key: template["spec"][key] for key in keys if key in template["spec"]}
    pod["labels"] = template["metadata"].get("labels") or {}
    pod["annotations"] = template["metadata"].get("annotations") or {}
    for line in leaves("", pod):
        print(f"{kind} pod {line}")
    sources = {v["name"]: next(key for key in v if key != "name") for v in template["spec"].get("volumes") or []}
    for container in template["spec"]["containers"]:
        for line in leaves("securityContext", container.get("securityContext") or {}):
            print(f"{kind} {container['name']} {line}")
        gpus = ((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
        if gpus is not None:
            print(f"{kind} {container['name']} limits.nvidia.com/gpu={gpus}")
        for mount in container.get("volumeMounts") or []:
            read_only = " read-only" if mount.get("readOnly") else ""
            print(f"{kind} {container['name']} mount {mount['mountPath']}<-{sources[mount['name']]}{read_only}")
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

# expect_pods FILE [helm args...]: what pod_of reads in the manifests rendered with those values is exactly FILE's lines
expect_pods() {
  local expected=$1
  shift
  "$helm" template adapterci "$chart" "$@" >"$work/pods.yaml" || fail "helm template $* failed"
  pod_of "$work/pods.yaml" >"$work/pods.txt"
  diff -u "$expected" "$work/pods.txt" >&2 \
    || fail "the account, security or scheduling rendered with ${*:-the defaults} differs (- expected, + rendered)"
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
# (CUDA's kernel cache goes to the /tmp emptyDir: its default, $HOME/.nv, is on the read-only root)
printf 'Deployment CUDA_CACHE_PATH=/tmp/cuda-cache\n' >"$work/cuda.txt"
expect_env "$work/cuda.txt"
cat >"$work/scale-out.txt" <<'ENV'
Deployment CUDA_CACHE_PATH=/tmp/cuda-cache
Deployment ADAPTERCI_DATABASE_URL=postgres://adapterci@postgres:5432/adapterci
Deployment ADAPTERCI_REGISTRY_URL=s3://adapters/registry
Deployment ADAPTERCI_DATASETS_URL=s3://adapters/datasets
Deployment envFrom secret adapterci-s3
Job ADAPTERCI_DATABASE_URL=postgres://adapterci@postgres:5432/adapterci
ENV
expect_env "$work/scale-out.txt" -f "$chart/ci/scale-out-values.yaml"
cat >"$work/secrets.txt" <<'ENV'
Deployment CUDA_CACHE_PATH=/tmp/cuda-cache
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
{ cat "$work/cuda.txt"; printf '%s ADAPTERCI_DATABASE_URL<-secret adapterci-db/url\n' Deployment Job; } \
  >"$work/database-secret.txt"
expect_env "$work/database-secret.txt" --set database.existingSecret=adapterci-db
{ cat "$work/cuda.txt"; printf 'Deployment ADAPTERCI_EVENT_WEBHOOK_URLS=https://a.example\n'; } >"$work/unsigned.txt"
expect_env "$work/unsigned.txt" --set 'eventWebhooks.urls={https://a.example}'
printf 'check_chart: environment rendered as expected, secrets only by secretKeyRef\n' >&2

# adapterd's pod: its own ServiceAccount and no API token (adapterd does not call the Kubernetes API), UID/GID 65532
# with the data volume group-writable, no privilege escalation or capabilities, the runtime's seccomp profile, a
# read-only root filesystem with /tmp an emptyDir; no scheduling constraint, pod label or annotation unless set
cat >"$work/pods-defaults.txt" <<'PODS'
ServiceAccount adapterci-adapterci automountServiceAccountToken=false
Deployment pod serviceAccountName=adapterci-adapterci
Deployment pod automountServiceAccountToken=false
Deployment pod securityContext.fsGroup=65532
Deployment pod securityContext.fsGroupChangePolicy=OnRootMismatch
Deployment pod securityContext.runAsGroup=65532
Deployment pod securityContext.runAsNonRoot=true
Deployment pod securityContext.runAsUser=65532
Deployment pod securityContext.seccompProfile.type=RuntimeDefault
Deployment pod labels.app.kubernetes.io/name=adapterci
Deployment pod labels.app.kubernetes.io/instance=adapterci
Deployment adapterd securityContext.allowPrivilegeEscalation=false
Deployment adapterd securityContext.capabilities.drop=["ALL"]
Deployment adapterd securityContext.readOnlyRootFilesystem=true
Deployment adapterd mount /data<-persistentVolumeClaim
Deployment adapterd mount /models<-emptyDir read-only
Deployment adapterd mount /tmp<-emptyDir
PODS
expect_pods "$work/pods-defaults.txt"
# on a GPU node pool: the IAM role on the account, other IDs with the rest of the security context kept, the GPU,
# the pod steered to GPU nodes, its annotation and label beside the selector's
cat >"$work/pods-eks-gpu.txt" <<'PODS'
ServiceAccount adapterci-adapterci automountServiceAccountToken=false
ServiceAccount adapterci-adapterci annotations.eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/adapterci
Deployment pod serviceAccountName=adapterci-adapterci
Deployment pod automountServiceAccountToken=false
Deployment pod securityContext.fsGroup=1000
Deployment pod securityContext.fsGroupChangePolicy=OnRootMismatch
Deployment pod securityContext.runAsGroup=1000
Deployment pod securityContext.runAsNonRoot=true
Deployment pod securityContext.runAsUser=1000
Deployment pod securityContext.seccompProfile.type=RuntimeDefault
Deployment pod nodeSelector.nvidia.com/gpu.present=true
Deployment pod tolerations[0].effect=NoSchedule
Deployment pod tolerations[0].key=nvidia.com/gpu
Deployment pod tolerations[0].operator=Exists
Deployment pod affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=nvidia.com/gpu.product
Deployment pod affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In
Deployment pod affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values=["NVIDIA-A10G", "NVIDIA-L4"]
Deployment pod labels.team=ml-platform
Deployment pod labels.app.kubernetes.io/name=adapterci
Deployment pod labels.app.kubernetes.io/instance=adapterci
Deployment pod annotations.karpenter.sh/do-not-disrupt=true
Deployment adapterd securityContext.allowPrivilegeEscalation=false
Deployment adapterd securityContext.capabilities.drop=["ALL"]
Deployment adapterd securityContext.readOnlyRootFilesystem=true
Deployment adapterd limits.nvidia.com/gpu=1
Deployment adapterd mount /data<-persistentVolumeClaim
Deployment adapterd mount /models<-emptyDir read-only
Deployment adapterd mount /tmp<-emptyDir
PODS
expect_pods "$work/pods-eks-gpu.txt" -f "$chart/ci/eks-gpu-values.yaml"

# the migration Job runs as adapterd does, whatever that is set to: the same account, token setting and pod security
# context, its container adapterd's security context; and none of adapterd's scheduling, labels or annotations
runs_as() { # KIND CONTAINER: the account, token and security context lines of that pod in $work/pods.txt
  sed -nE "s/^$1 (pod (serviceAccountName|automountServiceAccountToken|securityContext\.).*)$/\1/p
    s/^$1 $2 (securityContext\..*)$/container \1/p" "$work/pods.txt"
}
job_runs_as_adapterd() {
  "$helm" template adapterci "$chart" "$@" >"$work/pods.yaml" || fail "helm template $* failed"
  pod_of "$work/pods.yaml" >"$work/pods.txt"
  grep -q '^Job pod ' "$work/pods.txt" || fail "no migration Job rendered with $*"
  runs_as Deployment adapterd >"$work/adapterd-runs-as.txt"
  runs_as Job migrate >"$work/job-runs-as.txt"
  grep -q '^pod serviceAccountName=' "$work/adapterd-runs-as.txt" || fail "adapterd has no ServiceAccount with $*"
  diff -u "$work/adapterd-runs-as.txt" "$work/job-runs-as.txt" >&2 \
    || fail "the migration Job does not run as adapterd does with $* (- adapterd, + the Job)"
  grep -E '^Job pod (nodeSelector|tolerations|affinity|annotations)|^Job pod labels\.team' "$work/pods.txt" \
    && fail "the migration Job takes adapterd's scheduling, labels or annotations with $*"
  return 0
}
job_runs_as_adapterd -f "$chart/ci/scale-out-values.yaml"
job_runs_as_adapterd -f "$chart/ci/secrets-values.yaml"
job_runs_as_adapterd -f "$chart/ci/eks-gpu-values.yaml" --set-string database.existingSecret=adapterci-db
job_runs_as_adapterd --set-string database.url=postgres://db/a,serviceAccount.name=adapterci-runner \
  --set serviceAccount.automountServiceAccountToken=true,podSecurityContext.runAsUser=1000 \
  --set securityContext.readOnlyRootFilesystem=false,securityContext.capabilities.add={NET_BIND_SERVICE}
grep -qxF 'Job pod serviceAccountName=adapterci-runner' "$work/pods.txt" || fail "serviceAccount.name is not the Job's"
grep -qxF 'Job migrate securityContext.capabilities.add=["NET_BIND_SERVICE"]' "$work/pods.txt" \
  || fail "securityContext.capabilities.add does not reach the Job"
# on a first install the account exists before the Job, a pre-install hook too: a copy of it (annotations and all),
# ordered before the Job and deleted once the hooks have run, before Helm creates the account itself
"$helm" template adapterci "$chart" -f "$chart/ci/scale-out-values.yaml" \
  --set-string 'serviceAccount.annotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::1:role/a' >"$work/pods.yaml"
pod_of "$work/pods.yaml" | grep '^ServiceAccount ' >"$work/accounts.txt"
cat >"$work/accounts-expected.txt" <<'PODS'
ServiceAccount adapterci-adapterci automountServiceAccountToken=false
ServiceAccount adapterci-adapterci annotations.eks.amazonaws.com/role-arn=arn:aws:iam::1:role/a
ServiceAccount adapterci-adapterci automountServiceAccountToken=false
ServiceAccount adapterci-adapterci annotations.helm.sh/hook=pre-install
ServiceAccount adapterci-adapterci annotations.helm.sh/hook-weight=-10
ServiceAccount adapterci-adapterci annotations.helm.sh/hook-delete-policy=before-hook-creation,hook-succeeded
ServiceAccount adapterci-adapterci annotations.eks.amazonaws.com/role-arn=arn:aws:iam::1:role/a
PODS
diff -u "$work/accounts-expected.txt" "$work/accounts.txt" >&2 \
  || fail "the ServiceAccount and its pre-install copy for the migration Job differ (- expected, + rendered)"
grep -qF 'helm.sh/hook-weight' "$work/job.yaml" && fail "the migration Job is no longer after its account (weight 0)"
# an existing account: none created, adapterd and the Job run as the one named, else as the namespace's default
job_runs_as_adapterd --set serviceAccount.create=false \
  --set-string serviceAccount.name=shared,database.url=postgres://db/a
grep -q '^ServiceAccount ' "$work/pods.txt" && fail "a ServiceAccount is created with serviceAccount.create=false"
grep -qxF 'Deployment pod serviceAccountName=shared' "$work/pods.txt" || fail "serviceAccount.name is not adapterd's"
"$helm" template adapterci "$chart" --set serviceAccount.create=false >"$work/pods.yaml"
pod_of "$work/pods.yaml" | grep -qxF 'Deployment pod serviceAccountName=default' \
  || fail "with serviceAccount.create=false and no name adapterd does not run as the namespace's default account"
# null removes one default and keeps the others (values.yaml says so)
"$helm" template adapterci "$chart" --set podSecurityContext.seccompProfile=null >"$work/pods.yaml"
pod_of "$work/pods.yaml" >"$work/pods.txt"
grep -q 'seccompProfile' "$work/pods.txt" && fail "podSecurityContext.seccompProfile=null leaves a seccomp profile"
grep -qxF 'Deployment pod securityContext.runAsUser=65532' "$work/pods.txt" || fail "removing one default lost another"
printf 'check_chart: accounts, security contexts and scheduling rendered as expected, the Job running as adapterd\n' >&2

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
--set-string|serviceAccount.create=true|'/serviceAccount/create'
--set-string|serviceAccount.role=adapterci|additional properties 'role'
--set-string|serviceAccount.name=AdapterCI|'/serviceAccount/name'
--set|serviceAccount.annotations.iam\.gke\.io/gsa=1|'/serviceAccount/annotations/iam.gke.io~1gsa'
--set-string|serviceAccount.automountServiceAccountToken=false|'/serviceAccount/automountServiceAccountToken'
--set-string|automountServiceAccountToken=false|additional properties 'automountServiceAccountToken'
--set|podSecurityContext.runAsUser=-1|'/podSecurityContext/runAsUser'
--set|podSecurityContext.fsGroup=1.5|'/podSecurityContext/fsGroup'
--set-string|podSecurityContext.runAsNonRoot=true|'/podSecurityContext/runAsNonRoot'
--set-string|podSecurityContext.seccompProfile.type=Default|'/podSecurityContext/seccompProfile/type'
--set-string|podSecurityContext.fsGroupChangePolicy=Never|'/podSecurityContext/fsGroupChangePolicy'
--set-string|podSecurityContext.runAsUserName=adapterd|additional properties 'runAsUserName'
--set|securityContext.runAsUser=-1|'/securityContext/runAsUser'
--set-string|securityContext.readOnlyRootFileSystem=true|additional properties 'readOnlyRootFileSystem'
--set|securityContext.allowPrivilegeEscalation=0|'/securityContext/allowPrivilegeEscalation'
--set-string|securityContext.capabilities.drop=ALL|'/securityContext/capabilities/drop'
--set-string|securityContext.capabilities.remove={ALL}|additional properties 'remove'
--set|nodeSelector.nvidia\.com/gpu\.present=true|'/nodeSelector/nvidia.com~1gpu.present'
--set|nodeSelector.gpu=1|'/nodeSelector/gpu'
--set-string|nodeSelector=gpu|'/nodeSelector'
--set-string|tolerations[0].key=nvidia.com/gpu,tolerations[0].effect=NoScheduled|'/tolerations/0/effect'
--set-string|tolerations[0].keys=nvidia.com/gpu|additional properties 'keys'
--set-string|tolerations.key=nvidia.com/gpu|'/tolerations'
--set-string|affinity.nodeAfinity.x=y|additional properties 'nodeAfinity'
--set|podAnnotations.prometheus\.io/scrape=true|'/podAnnotations/prometheus.io~1scrape'
--set-string|podLabels.app\.kubernetes\.io/name=other|'/podLabels/app.kubernetes.io~1name'
--set-string|podLabels.app\.kubernetes\.io/instance=other|'/podLabels/app.kubernetes.io~1instance'
--set-string|podLabels.team=ml platform|'/podLabels/team'
BAD
printf 'check_chart: %d bad values refused, each naming its field\n' "$count" >&2
