#!/usr/bin/env bash
# Checks the Helm chart offline (scripts/test.sh runs it): `helm lint --strict`, the manifests `helm template`
# renders validated against Kubernetes' schemas (kubernetes-validate --strict) for the default values and for the
# values files in charts/adapterci/ci/ (scale-out, Secret-backed settings, a GPU node pool, the migration Job
# scheduled apart, the Kubernetes executor), adapterd's settings passed as its flags, the migration Job rendered
# only with PostgreSQL, the environment of adapterd and of the Job (secrets only by secretKeyRef), the
# ServiceAccounts, security contexts, image pull secrets, priority and scheduling of both (the Job with adapterd's
# security and, unless migration.* says otherwise, its pull secrets, priority and scheduling; its account created as a
# hook before it, both deleted by Helm once they succeeded), the Kubernetes executor's (executor: kubernetes) Role,
# RoleBinding, adapterd's environment and token and the training pods' template (exactly, and as a valid batch/v1
# Job's: adapterd's pull secrets, their own priority), none of it rendered with the default executor, the serving
# replicas (serving.replicas: adapterd --serve-only, their Service, environment and pods; none by default), the
# probes of adapterd and the replicas (ready: /readyz, alive: /healthz), and bad values refused by
# values.schema.json (or the templates) with the field named.
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
# account, security context, pull secrets, priority, scheduling, labels, annotations) and each of their containers (`KIND CONTAINER
# PATH=VALUE`: security context, GPU limit, and the Job's resources; `KIND CONTAINER mount PATH<-VOLUME_SOURCE`).
pod_of() {
  "$(dirname "$validate")/python" - "$1" <<'PY'
import json, sys, yaml

def leaves(path, value):  # an empty mapping below the first level is a leaf, {} (affinity.nodeAffinity={})
    if isinstance(value, dict) and (value or "." not in path):
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
    keys = ("serviceAccountName", "automountServiceAccountToken", "securityContext", "imagePullSecrets",
            "priorityClassName", "nodeSelector", "tolerations", "affinity")
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
        if kind == "Job":
            for line in leaves("resources", container.get("resources") or {}):
                print(f"{kind} {container['name']} {line}")
        for mount in container.get("volumeMounts") or []:
            read_only = " read-only" if mount.get("readOnly") else ""
            print(f"{kind} {container['name']} mount {mount['mountPath']}<-{sources[mount['name']]}{read_only}")
PY
}

# The hooks in rendered manifests ($1), one line each, in the order rendered: `KIND NAME events=EVENTS weight=WEIGHT
# delete=POLICIES` (Helm's defaults when an annotation is missing: weight 0, before-hook-creation); then whether the
# migration Job's account is there before its pod: `account NAME hook` (created by a hook of each of the Job's events,
# of a lower weight), `account NAME existing` (not rendered: an existing account), or `account NAME AFTER: why`
# (a release resource, which Helm creates only after the pre-install/pre-upgrade hooks, or a hook too late).
hooks_of() {
  "$(dirname "$validate")/python" - "$1" <<'PY'
import sys, yaml
docs = [doc for doc in yaml.safe_load_all(open(sys.argv[1])) if doc]
hooks = {}
for doc in docs:
    annotations = doc["metadata"].get("annotations") or {}
    if "helm.sh/hook" in annotations:
        hook = (annotations["helm.sh/hook"], int(annotations.get("helm.sh/hook-weight", "0")),
                annotations.get("helm.sh/hook-delete-policy", "before-hook-creation"))
        hooks[(doc["kind"], doc["metadata"]["name"])] = hook
        print(f"{doc['kind']} {doc['metadata']['name']} events={hook[0]} weight={hook[1]} delete={hook[2]}")
for job in (doc for doc in docs if doc["kind"] == "Job"):
    name = job["spec"]["template"]["spec"].get("serviceAccountName", "default")
    events, weight, _ = hooks[("Job", job["metadata"]["name"])]
    accounts = [doc for doc in docs if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == name]
    if not accounts:
        print(f"account {name} existing")
    elif ("ServiceAccount", name) not in hooks:
        print(f"account {name} AFTER: a release resource, created after the Job's hooks")
    else:
        account_events, account_weight, _ = hooks[("ServiceAccount", name)]
        missing = set(events.split(",")) - set(account_events.split(","))
        if missing:
            print(f"account {name} AFTER: not a hook of {','.join(sorted(missing))}")
        elif account_weight >= weight:
            print(f"account {name} AFTER: weight {account_weight}, not below the Job's {weight}")
        else:
            print(f"account {name} hook")
PY
}

# What the Kubernetes executor adds to rendered manifests ($1), one line a fact: the Role's namespace and each of its
# rules (`Role NAME rule {JSON}`), the RoleBinding's namespace, role and each subject, the ConfigMap's keys, the
# configMap volumes of the Deployment (`Deployment volume NAME<-configMap CONFIGMAP`) and whether its pod's
# checksum/job-template annotation is the template's sha256, and every leaf of the pod template (`template PATH=VALUE`,
# parsed as YAML from the ConfigMap's job-template.yaml), then the labels of the Job adapterd builds from it (`Job
# label KEY=VALUE`: the template's and adapterd's own). That Job (kube_launcher/job.rs: the template as its
# spec.template, labelled as its pod, backoffLimit 0, the podFailurePolicy that ignores disrupted pods) is written to
# $2 (for kubernetes-validate), when there is one.
kube_of() {
  "$(dirname "$validate")/python" - "$1" "$2" <<'PY'
import hashlib, json, sys, yaml

def leaves(path, value):  # as pod_of's
    if isinstance(value, dict) and (value or "." not in path):
        for key, inner in value.items():
            yield from leaves(f"{path}.{key}" if path else key, inner)
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        for index, inner in enumerate(value):
            yield from leaves(f"{path}[{index}]", inner)
    else:
        yield f"{path}={value if isinstance(value, str) else json.dumps(value)}"

docs = [doc for doc in yaml.safe_load_all(open(sys.argv[1])) if doc]
checksum = annotation = None
for doc in docs:
    kind, meta = doc["kind"], doc["metadata"]
    name = meta["name"]
    if kind == "Role":
        print(f"Role {name} namespace={meta.get('namespace')}")
        for rule in doc.get("rules") or []:
            print(f"Role {name} rule {json.dumps(rule, sort_keys=True)}")
    elif kind == "RoleBinding":
        print(f"RoleBinding {name} namespace={meta.get('namespace')} roleRef={json.dumps(doc['roleRef'], sort_keys=True)}")
        for subject in doc.get("subjects") or []:
            print(f"RoleBinding {name} subject {json.dumps(subject, sort_keys=True)}")
    elif kind == "ConfigMap":
        print(f"ConfigMap {name} keys={','.join(sorted(doc.get('data') or {}))}")
        text = (doc.get("data") or {}).get("job-template.yaml")
        if text is None:
            continue
        template = yaml.safe_load(text)
        for line in leaves("", template):
            print(f"template {line}")
        checksum = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
        labels = dict(template["metadata"].get("labels") or {})
        labels.update({"app.kubernetes.io/managed-by": "adapterd", "adapterci.dev/run": "check"})
        for key, value in sorted(labels.items()):
            print(f"Job label {key}={value}")
        template["metadata"]["labels"] = labels
        disrupted = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "adapterci-train-check", "labels": labels,
                            "annotations": {"adapterci.dev/run-id": "check"}},
               "spec": {"backoffLimit": 0, "podFailurePolicy": {"rules": [disrupted]},
                        "activeDeadlineSeconds": 7200, "ttlSecondsAfterFinished": 3600, "template": template}}
        with open(sys.argv[2], "w") as out:
            yaml.safe_dump(job, out)
    elif kind == "Deployment":
        pod = doc["spec"]["template"]
        annotation = (pod["metadata"].get("annotations") or {}).get("checksum/job-template")
        for volume in pod["spec"].get("volumes") or []:
            if "configMap" in volume:
                print(f"Deployment volume {volume['name']}<-configMap {volume['configMap']['name']}")
if checksum or annotation:
    state = "the template's" if annotation == checksum else f"{annotation}, not the template's {checksum}"
    print(f"Deployment checksum/job-template {state}")
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
  'helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded' 'ttlSecondsAfterFinished: 86400' \
  'command: ["adapterci-db", "migrate"]' 'value: "postgres://adapterci@postgres:5432/adapterci"'; do
  grep -qF -- "$line" "$work/job.yaml" || { cat "$work/job.yaml" >&2; fail "the migration Job lacks $line"; }
done
printf 'check_chart: adapterd flags passed whole, migration Job only with PostgreSQL\n' >&2

# adapterd's and the Job's environment: plain values only for what is not secret; the database URL, webhook secrets
# and the event signing key only by secretKeyRef to the Secret and key named (the key's default when none is)
# (CUDA's kernel cache goes to the /tmp emptyDir: its default, $HOME/.nv, is on the read-only root)
printf 'Deployment CUDA_CACHE_PATH=/tmp/cuda-cache\nDeployment ADAPTERCI_INSTANCE_ID=default/adapterci-adapterci\n' >"$work/cuda.txt"
expect_env "$work/cuda.txt"
cat >"$work/scale-out.txt" <<'ENV'
Deployment CUDA_CACHE_PATH=/tmp/cuda-cache
Deployment ADAPTERCI_INSTANCE_ID=default/adapterci-adapterci
Deployment ADAPTERCI_DATABASE_URL=postgres://adapterci@postgres:5432/adapterci
Deployment ADAPTERCI_REGISTRY_URL=s3://adapters/registry
Deployment ADAPTERCI_DATASETS_URL=s3://adapters/datasets
Deployment envFrom secret adapterci-s3
Job ADAPTERCI_DATABASE_URL=postgres://adapterci@postgres:5432/adapterci
ENV
expect_env "$work/scale-out.txt" -f "$chart/ci/scale-out-values.yaml"
cat >"$work/secrets.txt" <<'ENV'
Deployment CUDA_CACHE_PATH=/tmp/cuda-cache
Deployment ADAPTERCI_INSTANCE_ID=default/adapterci-adapterci
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
# on a GPU node pool: the IAM role on the account, other IDs with the rest of the security context kept, the image's
# pull secret, the priority class, the GPU, the pod steered to GPU nodes, its annotation and label beside the selector's
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
Deployment pod imagePullSecrets[0].name=registry-credentials
Deployment pod priorityClassName=adapterci-serving
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

# the migration Job runs as adapterd does, whatever that is set to: the same token setting and pod security context,
# its container adapterd's security context (restricted by default); its account is its own (below)
render_pods() { # [helm args...]: the manifests in $work/pods.yaml, what pod_of reads in them in $work/pods.txt
  "$helm" template adapterci "$chart" "$@" >"$work/pods.yaml" || fail "helm template $* failed"
  pod_of "$work/pods.yaml" >"$work/pods.txt"
}
runs_as() { # KIND CONTAINER: the token and security context lines of that pod in $work/pods.txt
  sed -nE "s/^$1 (pod (automountServiceAccountToken|securityContext\.).*)$/\1/p
    s/^$1 $2 (securityContext\..*)$/container \1/p" "$work/pods.txt"
}
job_runs_as_adapterd() {
  render_pods "$@"
  grep -q '^Job pod ' "$work/pods.txt" || fail "no migration Job rendered with $*"
  runs_as Deployment adapterd >"$work/adapterd-runs-as.txt"
  runs_as Job migrate >"$work/job-runs-as.txt"
  grep -q '^pod securityContext\.' "$work/adapterd-runs-as.txt" || fail "adapterd has no security context with $*"
  diff -u "$work/adapterd-runs-as.txt" "$work/job-runs-as.txt" >&2 \
    || fail "the migration Job does not run as adapterd does with $* (- adapterd, + the Job)"
}
job_runs_as_adapterd -f "$chart/ci/scale-out-values.yaml"
cat >"$work/restricted.txt" <<'PODS'
pod automountServiceAccountToken=false
pod securityContext.fsGroup=65532
pod securityContext.fsGroupChangePolicy=OnRootMismatch
pod securityContext.runAsGroup=65532
pod securityContext.runAsNonRoot=true
pod securityContext.runAsUser=65532
pod securityContext.seccompProfile.type=RuntimeDefault
container securityContext.allowPrivilegeEscalation=false
container securityContext.capabilities.drop=["ALL"]
container securityContext.readOnlyRootFilesystem=true
PODS
diff -u "$work/restricted.txt" "$work/job-runs-as.txt" >&2 \
  || fail "the migration Job's pod is not restricted by default (- expected, + rendered)"
job_runs_as_adapterd -f "$chart/ci/secrets-values.yaml"
job_runs_as_adapterd -f "$chart/ci/eks-gpu-values.yaml" --set-string database.existingSecret=adapterci-db
job_runs_as_adapterd -f "$chart/ci/migration-values.yaml"
job_runs_as_adapterd --set-string database.url=postgres://db/a,serviceAccount.name=adapterci-runner \
  --set serviceAccount.automountServiceAccountToken=true,podSecurityContext.runAsUser=1000 \
  --set securityContext.readOnlyRootFilesystem=false,securityContext.capabilities.add={NET_BIND_SERVICE}
grep -qxF 'Job migrate securityContext.capabilities.add=["NET_BIND_SERVICE"]' "$work/pods.txt" \
  || fail "securityContext.capabilities.add does not reach the Job"

# the Job's account exists before its pod on every path (first install, an upgrade turning serviceAccount.create on or
# renaming the account): with serviceAccount.create its own, <fullname>-migrate, a hook of the Job's events (pre-install
# and pre-upgrade) of a lower weight, replaced at each run (before-hook-creation) and deleted by Helm once the phase's
# hooks succeeded (hook-succeeded: Helm deletes those after the last of them, the Job; `helm uninstall` leaves hooks),
# like the Job, which no hook-failed deletes (its log says why it failed); with the annotations of adapterd's account
# and no token of its own; adapterd keeps the release's account
expect_account() { # NAME HOW [helm args...]: the Job runs as NAME, which is `hook` (made before it) or `existing`
  local name=$1 how=$2
  shift 2
  render_pods "$@"
  hooks_of "$work/pods.yaml" >"$work/hooks.txt"
  grep -qxF "account $name $how" "$work/hooks.txt" \
    || { cat "$work/hooks.txt" >&2; fail "the migration Job's account is not $name, $how, with $*"; }
}
expect_account adapterci-adapterci-migrate hook -f "$chart/ci/scale-out-values.yaml" \
  --set-string 'serviceAccount.annotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::1:role/a'
cat >"$work/hooks-expected.txt" <<'HOOKS'
ServiceAccount adapterci-adapterci-migrate events=pre-install,pre-upgrade weight=-10 delete=before-hook-creation,hook-succeeded
Job adapterci-adapterci-migrate events=pre-install,pre-upgrade weight=0 delete=before-hook-creation,hook-succeeded
account adapterci-adapterci-migrate hook
HOOKS
diff -u "$work/hooks-expected.txt" "$work/hooks.txt" >&2 \
  || fail "the migration Job's hooks differ (- expected, + rendered)"
grep '^ServiceAccount ' "$work/pods.txt" >"$work/accounts.txt"
cat >"$work/accounts-expected.txt" <<'PODS'
ServiceAccount adapterci-adapterci automountServiceAccountToken=false
ServiceAccount adapterci-adapterci annotations.eks.amazonaws.com/role-arn=arn:aws:iam::1:role/a
ServiceAccount adapterci-adapterci-migrate automountServiceAccountToken=false
ServiceAccount adapterci-adapterci-migrate annotations.helm.sh/hook=pre-install,pre-upgrade
ServiceAccount adapterci-adapterci-migrate annotations.helm.sh/hook-weight=-10
ServiceAccount adapterci-adapterci-migrate annotations.helm.sh/hook-delete-policy=before-hook-creation,hook-succeeded
ServiceAccount adapterci-adapterci-migrate annotations.eks.amazonaws.com/role-arn=arn:aws:iam::1:role/a
PODS
diff -u "$work/accounts-expected.txt" "$work/accounts.txt" >&2 \
  || fail "adapterd's ServiceAccount and the migration Job's hook account differ (- expected, + rendered)"
grep -qxF 'Deployment pod serviceAccountName=adapterci-adapterci' "$work/pods.txt" \
  || fail "adapterd does not run as the release's ServiceAccount with PostgreSQL"
# a named account and a token for the pods: adapterd's account takes the name, the Job keeps its own, with no token
# of its own (the Job's pod mounts one, as adapterd's does: the pod's setting decides)
expect_account adapterci-adapterci-migrate hook --set-string database.url=postgres://db/a \
  --set-string serviceAccount.name=adapterci-runner --set serviceAccount.automountServiceAccountToken=true
for line in 'Deployment pod serviceAccountName=adapterci-runner' 'Job pod automountServiceAccountToken=true' \
  'ServiceAccount adapterci-runner automountServiceAccountToken=true' \
  'ServiceAccount adapterci-adapterci-migrate automountServiceAccountToken=false'; do
  grep -qxF "$line" "$work/pods.txt" || fail "with serviceAccount.name and a token: no $line"
done
# no PostgreSQL: no Job, and no account for it
render_pods
grep -q '^ServiceAccount adapterci-adapterci-migrate ' "$work/pods.txt" \
  && fail "the migration Job's account is created without PostgreSQL"
# an existing account: none created, adapterd and the Job run as the one named, else as the namespace's default
expect_account shared existing --set serviceAccount.create=false \
  --set-string serviceAccount.name=shared,database.url=postgres://db/a
grep -q '^ServiceAccount ' "$work/pods.txt" && fail "a ServiceAccount is created with serviceAccount.create=false"
grep -qxF 'Deployment pod serviceAccountName=shared' "$work/pods.txt" || fail "serviceAccount.name is not adapterd's"
expect_account default existing --set serviceAccount.create=false --set-string database.url=postgres://db/a
grep -qxF 'Deployment pod serviceAccountName=default' "$work/pods.txt" \
  || fail "with serviceAccount.create=false and no name adapterd does not run as the namespace's default account"
grep -q '^ServiceAccount ' "$work/pods.txt" && fail "a ServiceAccount is created with serviceAccount.create=false"
# null removes one default and keeps the others (values.yaml says so)
render_pods --set podSecurityContext.seccompProfile=null
grep -q 'seccompProfile' "$work/pods.txt" && fail "podSecurityContext.seccompProfile=null leaves a seccomp profile"
grep -qxF 'Deployment pod securityContext.runAsUser=65532' "$work/pods.txt" || fail "removing one default lost another"

# the Job's scheduling: adapterd's nodeSelector, tolerations, affinity, pod annotations and labels (the image runs only
# where adapterd's may), each replaced, whole, by migration.* when set there, adapterd's pod keeping its own; the
# Job's pod keeps the chart's name, instance and component labels (the Service must not pick it), and its own
# resources, overridable key by key, never adapterd's (nor its GPU)
scheduling() { # KIND: the pull secret, priority, scheduling, annotation and label lines of that pod in $work/pods.txt,
  # not the chart's labels
  sed -nE "/^$1 pod labels\.app\.kubernetes\.io\/(name|instance|component)=/d
    s/^$1 pod ((imagePullSecrets|priorityClassName|nodeSelector|tolerations|affinity|annotations|labels)[.=[].*)$/\1/p" \
    "$work/pods.txt"
}
job_schedules_as_adapterd() {
  render_pods "$@"
  scheduling Deployment >"$work/adapterd-scheduling.txt"
  scheduling Job >"$work/job-scheduling.txt"
  grep -q '^Job pod ' "$work/pods.txt" || fail "no migration Job rendered with $*"
  diff -u "$work/adapterd-scheduling.txt" "$work/job-scheduling.txt" >&2 \
    || fail "the migration Job is not scheduled as adapterd is with $* (- adapterd, + the Job)"
}
job_schedules_as_adapterd -f "$chart/ci/eks-gpu-values.yaml" --set-string database.existingSecret=adapterci-db
cp "$work/adapterd-scheduling.txt" "$work/gpu-scheduling.txt"
grep -qxF 'nodeSelector.nvidia.com/gpu.present=true' "$work/job-scheduling.txt" \
  || fail "the GPU pool's scheduling does not reach the migration Job"
"$validate" --strict "$work/pods.yaml" >"$work/validate.txt" 2>&1 \
  || { cat "$work/validate.txt" >&2; fail "the manifests of a GPU pool with PostgreSQL do not validate"; }
grep -E '^Job migrate (limits\.nvidia\.com/gpu|resources\.limits\.nvidia\.com/gpu)' "$work/pods.txt" \
  && fail "the migration Job takes adapterd's GPU"
# the migration Job's resources in the last render are exactly stdin's lines, else fail with $1
job_resources_are() {
  cat >"$work/job-resources-expected.txt"
  grep '^Job migrate resources\.' "$work/pods.txt" >"$work/job-resources.txt" || true
  diff -u "$work/job-resources-expected.txt" "$work/job-resources.txt" >&2 || fail "$1 (- expected, + rendered)"
}
job_resources_are "the migration Job's default resources differ" <<'PODS'
Job migrate resources.limits.memory=256Mi
Job migrate resources.requests.cpu=100m
Job migrate resources.requests.memory=64Mi
PODS
for labels in 'app.kubernetes.io/name=adapterci-migrate' 'app.kubernetes.io/instance=adapterci' \
  'app.kubernetes.io/component=migrate'; do
  grep -qxF "Job pod labels.$labels" "$work/pods.txt" || fail "the migration Job's pod lacks its label $labels"
done
# no scheduling for adapterd, none for the Job
job_schedules_as_adapterd -f "$chart/ci/scale-out-values.yaml"
# each key set under migration replaces adapterd's for the Job only, the others still adapterd's
render_pods -f "$chart/ci/eks-gpu-values.yaml" --set-string database.url=postgres://db/a \
  --set-string 'migration.nodeSelector.kubernetes\.io/arch=arm64'
scheduling Job >"$work/job-scheduling.txt"
grep -qxF 'nodeSelector.kubernetes.io/arch=arm64' "$work/job-scheduling.txt" \
  || fail "migration.nodeSelector does not reach the Job"
grep -q '^nodeSelector\.nvidia' "$work/job-scheduling.txt" && fail "migration.nodeSelector is merged into adapterd's"
grep -qxF 'tolerations[0].key=nvidia.com/gpu' "$work/job-scheduling.txt" \
  || fail "with migration.nodeSelector only, the Job loses adapterd's tolerations"
grep -qxF 'Deployment pod nodeSelector.nvidia.com/gpu.present=true' "$work/pods.txt" \
  || fail "migration.nodeSelector changes adapterd's"
grep -q '^Deployment pod nodeSelector.kubernetes' "$work/pods.txt" && fail "migration.nodeSelector reaches adapterd"
# every key set (ci/migration-values.yaml): the Job's scheduling and resources are exactly migration's, adapterd's pod
# is scheduled as without it
render_pods -f "$chart/ci/migration-values.yaml"
scheduling Job >"$work/job-scheduling.txt"
cat >"$work/job-scheduling-expected.txt" <<'PODS'
imagePullSecrets[0].name=mirror-credentials
imagePullSecrets[1].name=registry-credentials
priorityClassName=adapterci-batch
nodeSelector.kubernetes.io/arch=amd64
tolerations[0].effect=NoSchedule
tolerations[0].key=dedicated
tolerations[0].operator=Equal
tolerations[0].value=adapterci
affinity.nodeAffinity={}
labels.job-kind=migration
labels.team=ml-platform
annotations.cluster-autoscaler.kubernetes.io/safe-to-evict=false
PODS
diff -u "$work/job-scheduling-expected.txt" "$work/job-scheduling.txt" >&2 \
  || fail "migration.* does not replace adapterd's scheduling for the Job (- expected, + rendered)"
job_resources_are "migration.resources does not set the Job's resources" <<'PODS'
Job migrate resources.limits.memory=512Mi
Job migrate resources.requests.cpu=200m
Job migrate resources.requests.memory=128Mi
PODS
scheduling Deployment | diff -u "$work/gpu-scheduling.txt" - >&2 \
  || fail "migration.* changes adapterd's scheduling (- eks-gpu-values.yaml's, + with migration.* set)"
grep -qxF '  ttlSecondsAfterFinished: 3600' "$work/pods.yaml" \
  || fail "migration.ttlSecondsAfterFinished does not reach the Job"
# null keeps a failed Job until Helm replaces it
render_pods --set-string database.url=postgres://db/a --set migration.ttlSecondsAfterFinished=null
grep -q '^kind: Job' "$work/pods.yaml" || fail "no migration Job with migration.ttlSecondsAfterFinished=null"
grep -q '^  ttlSecondsAfterFinished:' "$work/pods.yaml" && fail "migration.ttlSecondsAfterFinished=null leaves a TTL"
# one resource given replaces that one, the other defaults kept; null removes one
render_pods --set-string database.url=postgres://db/a,migration.resources.limits.memory=1Gi \
  --set migration.resources.requests.cpu=null
grep '^Job migrate resources\.' "$work/pods.txt" >"$work/job-resources.txt" || true
printf 'Job migrate resources.limits.memory=1Gi\nJob migrate resources.requests.memory=64Mi\n' \
  | diff -u - "$work/job-resources.txt" >&2 || fail "migration.resources is not taken key by key"
# adapterd's labels reach the Job's pod, but the chart's component label is the Job's own
render_pods --set-string database.url=postgres://db/a --set-string 'podLabels.app\.kubernetes\.io/component=server'
grep -qxF 'Deployment pod labels.app.kubernetes.io/component=server' "$work/pods.txt" \
  || fail "podLabels does not reach adapterd"
grep -qxF 'Job pod labels.app.kubernetes.io/component=migrate' "$work/pods.txt" \
  || fail "adapterd's podLabels replace the migration Job's component label"
printf 'check_chart: accounts, security contexts and scheduling rendered as expected (the Job: %s)\n' \
  "adapterd's security, pull secrets, priority, scheduling unless migration.* says; an account made and gone with it" >&2

# executor: kubernetes (ci/kubernetes-executor-values.yaml): adapterd gets the executor, its pod template's path, the
# release's namespace for the Jobs and their TTL, and an API token; a Role in that namespace lets it create, get and
# delete Jobs, list pods, read their logs and list events (its Jobs' FailedCreate), bound to its account; the pod
# template, a ConfigMap mounted read-only at /etc/adapterci, is exactly the training pod expected: one container
# `trainer`, adapterd's image (and its pull secrets) without args or resources (adapterd sets them), adapterd's
# security contexts and S3 credentials only, its own account (with adapterd's account's annotations, no token), its
# own priority and scheduling, restartPolicy Never, /tmp an emptyDir of trainer.tmpSizeLimit; and that template, as a
# Job's, is valid. With the default executor none of it renders.
kube_values="$chart/ci/kubernetes-executor-values.yaml"
render_kube() { # [helm args...]: the manifests in $work/kube.yaml, kube_of's lines in $work/kube.txt, the Job in
  # $work/train-job.yaml
  rm -f "$work/train-job.yaml"
  "$helm" template adapterci "$chart" "$@" >"$work/kube.yaml" || fail "helm template $* failed"
  kube_of "$work/kube.yaml" "$work/train-job.yaml" >"$work/kube.txt"
}
cat >"$work/kube-env.txt" <<'ENV'
Deployment CUDA_CACHE_PATH=/tmp/cuda-cache
Deployment ADAPTERCI_INSTANCE_ID=ml-training/adapterci-adapterci
Deployment ADAPTERCI_REGISTRY_URL=s3://adapters/registry
Deployment ADAPTERCI_DATASETS_URL=s3://adapters/datasets
Deployment ADAPTERCI_EXECUTOR=kubernetes
Deployment ADAPTERCI_KUBE_JOB_TEMPLATE=/etc/adapterci/job-template.yaml
Deployment ADAPTERCI_KUBE_NAMESPACE=ml-training
Deployment ADAPTERCI_KUBE_JOB_TTL_SECS=86400
Deployment ADAPTERCI_KUBE_START_TIMEOUT_SECS=1800
ENV
expect_env "$work/kube-env.txt" -f "$kube_values" --namespace ml-training
cat >"$work/kube-expected.txt" <<'KUBE'
ConfigMap adapterci-adapterci-job-template keys=job-template.yaml
template metadata.labels.app.kubernetes.io/component=trainer
template metadata.labels.app.kubernetes.io/instance=adapterci
template metadata.labels.app.kubernetes.io/name=adapterci-trainer
template metadata.labels.app.kubernetes.io/version=0.1.0
template metadata.labels.team=ml-platform
template metadata.annotations.karpenter.sh/do-not-disrupt=true
template spec.restartPolicy=Never
template spec.serviceAccountName=adapterci-adapterci-trainer
template spec.automountServiceAccountToken=false
template spec.securityContext.fsGroup=65532
template spec.securityContext.fsGroupChangePolicy=OnRootMismatch
template spec.securityContext.runAsGroup=65532
template spec.securityContext.runAsNonRoot=true
template spec.securityContext.runAsUser=65532
template spec.securityContext.seccompProfile.type=RuntimeDefault
template spec.imagePullSecrets[0].name=registry-credentials
template spec.priorityClassName=adapterci-training
template spec.nodeSelector.nvidia.com/gpu.present=true
template spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=nvidia.com/gpu.product
template spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In
template spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values=["NVIDIA-A10G", "NVIDIA-L4"]
template spec.tolerations[0].effect=NoSchedule
template spec.tolerations[0].key=nvidia.com/gpu
template spec.tolerations[0].operator=Exists
template spec.containers[0].name=trainer
template spec.containers[0].image=adapterci/adapterd:0.1.0
template spec.containers[0].imagePullPolicy=IfNotPresent
template spec.containers[0].securityContext.allowPrivilegeEscalation=false
template spec.containers[0].securityContext.capabilities.drop=["ALL"]
template spec.containers[0].securityContext.readOnlyRootFilesystem=true
template spec.containers[0].env[0].name=CUDA_CACHE_PATH
template spec.containers[0].env[0].value=/tmp/cuda-cache
template spec.containers[0].volumeMounts[0].name=tmp
template spec.containers[0].volumeMounts[0].mountPath=/tmp
template spec.volumes[0].name=tmp
template spec.volumes[0].emptyDir.sizeLimit=8Gi
Job label adapterci.dev/run=check
Job label app.kubernetes.io/component=trainer
Job label app.kubernetes.io/instance=adapterci
Job label app.kubernetes.io/managed-by=adapterd
Job label app.kubernetes.io/name=adapterci-trainer
Job label app.kubernetes.io/version=0.1.0
Job label team=ml-platform
Role adapterci-adapterci-executor namespace=ml-training
Role adapterci-adapterci-executor rule {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]}
Role adapterci-adapterci-executor rule {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
Role adapterci-adapterci-executor rule {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
Role adapterci-adapterci-executor rule {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}
RoleBinding adapterci-adapterci-executor namespace=ml-training roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "adapterci-adapterci-executor"}
RoleBinding adapterci-adapterci-executor subject {"kind": "ServiceAccount", "name": "adapterci-adapterci", "namespace": "ml-training"}
Deployment volume job-template<-configMap adapterci-adapterci-job-template
Deployment checksum/job-template the template's
KUBE
render_kube -f "$kube_values" --namespace ml-training
[ -s "$work/train-job.yaml" ] || fail "no pod template to validate as a Job"
"$validate" --strict "$work/train-job.yaml" >"$work/validate.txt" 2>&1 \
  || { cat "$work/validate.txt" "$work/train-job.yaml" >&2; fail "the pod template is not a valid batch/v1 Job's"; }
diff -u "$work/kube-expected.txt" "$work/kube.txt" >&2 \
  || fail "the Kubernetes executor's Role, RoleBinding or pod template differs (- expected, + rendered)"
# adapterd's pod: a token (it calls the API), the template mounted read-only, its own scheduling (none here); its
# account and the trainer's with the IAM role's annotation, neither with a token of its own
cat >"$work/kube-pods.txt" <<'PODS'
ServiceAccount adapterci-adapterci automountServiceAccountToken=false
ServiceAccount adapterci-adapterci annotations.eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/adapterci
ServiceAccount adapterci-adapterci-trainer automountServiceAccountToken=false
ServiceAccount adapterci-adapterci-trainer annotations.eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/adapterci
Deployment pod serviceAccountName=adapterci-adapterci
Deployment pod automountServiceAccountToken=true
Deployment pod securityContext.fsGroup=65532
Deployment pod securityContext.fsGroupChangePolicy=OnRootMismatch
Deployment pod securityContext.runAsGroup=65532
Deployment pod securityContext.runAsNonRoot=true
Deployment pod securityContext.runAsUser=65532
Deployment pod securityContext.seccompProfile.type=RuntimeDefault
Deployment pod imagePullSecrets[0].name=registry-credentials
Deployment pod priorityClassName=adapterci-serving
Deployment pod labels.app.kubernetes.io/name=adapterci
Deployment pod labels.app.kubernetes.io/instance=adapterci
Deployment pod annotations.checksum/job-template=SHA256
Deployment adapterd securityContext.allowPrivilegeEscalation=false
Deployment adapterd securityContext.capabilities.drop=["ALL"]
Deployment adapterd securityContext.readOnlyRootFilesystem=true
Deployment adapterd mount /data<-persistentVolumeClaim
Deployment adapterd mount /models<-emptyDir read-only
Deployment adapterd mount /tmp<-emptyDir
Deployment adapterd mount /etc/adapterci<-configMap read-only
PODS
render_pods -f "$kube_values"
sed -E 's/^(Deployment pod annotations\.checksum\/job-template=)[0-9a-f]{64}$/\1SHA256/' "$work/pods.txt" \
  | diff -u "$work/kube-pods.txt" - >&2 \
  || fail "adapterd's pod or the accounts with the Kubernetes executor differ (- expected, + rendered)"

# the pod template follows adapterd's security contexts, image and its pull secrets, and S3 credentials (the Secret's
# keys, never a plain value, and nothing else of adapterd's: no database URL, no webhook secret), not adapterd's
# priority, scheduling or labels;
# the migration Job keeps no token
render_kube -f "$chart/ci/scale-out-values.yaml" -f "$chart/ci/eks-gpu-values.yaml" \
  --set-string executor=kubernetes,image.tag=0.2.0,database.existingSecret=adapterci-db,database.url= \
  --set securityContext.readOnlyRootFilesystem=false -f "$chart/ci/secrets-values.yaml"
grep -E '^template spec\.(containers\[0\]\.(image=|env|securityContext)|securityContext|imagePullSecrets)' \
  "$work/kube.txt" >"$work/trainer-runs-as.txt" || true
cat >"$work/trainer-runs-as-expected.txt" <<'KUBE'
template spec.securityContext.fsGroup=1000
template spec.securityContext.fsGroupChangePolicy=OnRootMismatch
template spec.securityContext.runAsGroup=1000
template spec.securityContext.runAsNonRoot=true
template spec.securityContext.runAsUser=1000
template spec.securityContext.seccompProfile.type=RuntimeDefault
template spec.imagePullSecrets[0].name=registry-credentials
template spec.containers[0].image=adapterci/adapterd:0.2.0
template spec.containers[0].securityContext.allowPrivilegeEscalation=false
template spec.containers[0].securityContext.capabilities.drop=["ALL"]
template spec.containers[0].securityContext.readOnlyRootFilesystem=false
template spec.containers[0].env[0].name=CUDA_CACHE_PATH
template spec.containers[0].env[0].value=/tmp/cuda-cache
template spec.containers[0].envFrom[0].secretRef.name=adapterci-s3
KUBE
diff -u "$work/trainer-runs-as-expected.txt" "$work/trainer-runs-as.txt" >&2 \
  || fail "the training pods do not run as adapterd does, or get more of its environment (- expected, + rendered)"
grep -E '^template (metadata\.annotations|metadata\.labels\.team|spec\.(priorityClassName|nodeSelector|tolerations|affinity))' \
  "$work/kube.txt" >&2 && fail "adapterd's priority, scheduling, labels or annotations reach the training pods"
grep -E '^template .*(postgres|secretKeyRef|ADAPTERCI_)' "$work/kube.txt" >&2 \
  && fail "adapterd's database URL, secrets or settings reach the training pods"
"$validate" --strict "$work/train-job.yaml" >"$work/validate.txt" 2>&1 \
  || { cat "$work/validate.txt" >&2; fail "the pod template with S3 credentials is not a valid Job's"; }
render_pods -f "$chart/ci/scale-out-values.yaml" --set-string executor=kubernetes
grep -qxF 'Deployment pod automountServiceAccountToken=true' "$work/pods.txt" \
  || fail "adapterd's pod mounts no API token with the Kubernetes executor and PostgreSQL"
grep -qxF 'Job pod automountServiceAccountToken=false' "$work/pods.txt" \
  || fail "the migration Job mounts adapterd's API token with the Kubernetes executor"
# an existing account: the Role bound to it, no account made, the training pods run as it without a token; the
# staging URL and the TTL passed as set, the template's default /tmp size
render_kube --set serviceAccount.create=false,kubeJobTtlSeconds=60,kubeStartTimeoutSeconds=0 --set-string executor=kubernetes \
  --set-string serviceAccount.name=shared,kubeStagingUrl=s3://staging/adapterci
grep -qxF 'RoleBinding adapterci-adapterci-executor subject {"kind": "ServiceAccount", "name": "shared", "namespace": "default"}' \
  "$work/kube.txt" || { cat "$work/kube.txt" >&2; fail "the Role is not bound to serviceAccount.name with create false"; }
grep -c '^RoleBinding .* subject ' "$work/kube.txt" | grep -qx 1 || fail "the Role is bound to more than adapterd's account"
for line in 'template spec.serviceAccountName=shared' 'template spec.automountServiceAccountToken=false' \
  'template spec.volumes[0].emptyDir.sizeLimit=2Gi'; do
  grep -qxF "$line" "$work/kube.txt" || fail "with serviceAccount.create=false: no $line"
done
grep -q '^kind: ServiceAccount' "$work/kube.yaml" && fail "a ServiceAccount is created with serviceAccount.create=false"
env_of "$work/kube.yaml" >"$work/env.txt"
for line in 'Deployment ADAPTERCI_KUBE_STAGING_URL=s3://staging/adapterci' 'Deployment ADAPTERCI_KUBE_JOB_TTL_SECS=60' \
  'Deployment ADAPTERCI_KUBE_NAMESPACE=default' 'Deployment ADAPTERCI_KUBE_START_TIMEOUT_SECS=0'; do
  grep -qxF "$line" "$work/env.txt" || fail "with kubeStagingUrl, kubeJobTtlSeconds and kubeStartTimeoutSeconds: no $line"
done
"$validate" --strict "$work/kube.yaml" >"$work/validate.txt" 2>&1 \
  || { cat "$work/validate.txt" >&2; fail "the manifests with an existing account and a staging URL do not validate"; }
# the default executor, whatever else is set: no Role, binding, template, trainer account, executor settings or token
for values in "" "$chart"/ci/*-values.yaml; do
  [ "$values" = "$kube_values" ] && continue
  args=(--set-string database.url=postgres://db/a,database.existingSecret=)
  [ -n "$values" ] && args+=(-f "$values")
  render_kube "${args[@]}"
  [ -s "$work/kube.txt" ] && { cat "$work/kube.txt" >&2; fail "the Kubernetes executor's objects render for ${values:-the defaults}"; }
  grep -E '^kind: (Role|RoleBinding|ConfigMap)$|-trainer$|ADAPTERCI_EXECUTOR|ADAPTERCI_KUBE_|/etc/adapterci|automountServiceAccountToken: true' \
    "$work/kube.yaml" >&2 && fail "the Kubernetes executor's settings render for ${values:-the defaults}"
done
printf 'check_chart: executor kubernetes: %s\n' \
  "Role, RoleBinding, adapterd's env and token, the pod template (a valid Job's) as expected; none by default" >&2

# serving replicas (serving.replicas): none by default or in any other values file; with ci/serving-values.yaml a
# Deployment <fullname>-serve of that many pods running adapterd --serve-only with adapterd's settings as flags, the
# database, registry, datasets and S3 credentials as adapterd's (no instance id, executor, webhook secrets or event
# webhooks: a replica delivers and trains nothing), adapterd's account without a token and its security contexts, its
# own labels (adapterd's Service does not pick it), resources and scheduling, /data an emptyDir of dataSizeLimit, and
# a Service of its own selecting exactly its pods
serve_of() { # the facts of the serving Deployment and Service in rendered manifests ($1), one line each
  "$(dirname "$validate")/python" - "$1" <<'PY'
import json, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind == "Deployment":
        spec = doc["spec"]
        print(f"Deployment {name} replicas={spec['replicas']}")
        print(f"Deployment {name} selector={json.dumps(spec['selector']['matchLabels'], sort_keys=True)}")
        pod = spec["template"]["spec"]
        for container in pod["containers"]:
            for arg in container.get("args") or []:
                print(f"Deployment {name} arg {arg}")
            print(f"Deployment {name} resources={json.dumps(container.get('resources'), sort_keys=True)}")
            for probe in ("readinessProbe", "livenessProbe"):
                print(f"Deployment {name} {probe} {(container.get(probe) or {}).get('httpGet', {}).get('path')}")
        for volume in pod.get("volumes") or []:
            print(f"Deployment {name} volume {volume['name']} {json.dumps({k: v for k, v in volume.items() if k != 'name'}, sort_keys=True)}")
    elif kind == "Service":
        spec = doc["spec"]
        print(f"Service {name} type={spec['type']} selector={json.dumps(spec['selector'], sort_keys=True)}")
        for port in spec["ports"]:
            print(f"Service {name} port {port['port']}->{port['targetPort']}")
PY
}
for values in "" "$chart"/ci/*-values.yaml; do
  [ "$values" = "$chart/ci/serving-values.yaml" ] && continue
  args=()
  [ -n "$values" ] && args=(-f "$values")
  "$helm" template adapterci "$chart" "${args[@]}" >"$work/rendered.yaml"
  grep -E 'serve-only|adapterci-serve' "$work/rendered.yaml" >&2 && fail "serving replicas render for ${values:-the defaults}"
done
serving_values=(-f "$chart/ci/serving-values.yaml")
"$helm" template adapterci "$chart" "${serving_values[@]}" --show-only templates/serving.yaml >"$work/serve.yaml" \
  || fail "no serving replicas with ci/serving-values.yaml"
serve_of "$work/serve.yaml" >"$work/serve.txt"
cat >"$work/serve-expected.txt" <<'SERVE'
Service adapterci-adapterci-serve type=LoadBalancer selector={"app.kubernetes.io/component": "serve", "app.kubernetes.io/instance": "adapterci", "app.kubernetes.io/name": "adapterci-serve"}
Service adapterci-adapterci-serve port 80->http
Deployment adapterci-adapterci-serve replicas=3
Deployment adapterci-adapterci-serve selector={"app.kubernetes.io/component": "serve", "app.kubernetes.io/instance": "adapterci", "app.kubernetes.io/name": "adapterci-serve"}
Deployment adapterci-adapterci-serve arg --serve-only
Deployment adapterci-adapterci-serve arg --listen=0.0.0.0:8080
Deployment adapterci-adapterci-serve arg --data-dir=/data
Deployment adapterci-adapterci-serve arg --threads=0
Deployment adapterci-adapterci-serve arg --max-merged-exports=1
Deployment adapterci-adapterci-serve arg --max-body-mib=256
Deployment adapterci-adapterci-serve arg --adapter-cache-mib=512
Deployment adapterci-adapterci-serve arg --model=smollm2-135m-instruct=/models/SmolLM2-135M-Instruct.Q4_1.gguf
Deployment adapterci-adapterci-serve resources={"limits": {"memory": "12Gi", "nvidia.com/gpu": 1}, "requests": {"cpu": "2", "memory": "4Gi"}}
Deployment adapterci-adapterci-serve readinessProbe /readyz
Deployment adapterci-adapterci-serve livenessProbe /healthz
Deployment adapterci-adapterci-serve volume data {"emptyDir": {"sizeLimit": "20Gi"}}
Deployment adapterci-adapterci-serve volume models {"persistentVolumeClaim": {"claimName": "adapterci-models", "readOnly": true}}
Deployment adapterci-adapterci-serve volume tmp {"emptyDir": {}}
SERVE
diff -u "$work/serve-expected.txt" "$work/serve.txt" >&2 || fail "the serving replicas differ (- expected, + rendered)"
# adapterd too is put behind its Service only once its worker has pulled the published adapters (/readyz); alive is
# /healthz, which answers while it pulls
"$helm" template adapterci "$chart" "${serving_values[@]}" --show-only templates/deployment.yaml >"$work/adapterd.yaml"
serve_of "$work/adapterd.yaml" | grep -E 'Probe ' >"$work/probes.txt"
printf '%s\n' 'Deployment adapterci-adapterci readinessProbe /readyz' \
  'Deployment adapterci-adapterci livenessProbe /healthz' >"$work/probes-expected.txt"
diff -u "$work/probes-expected.txt" "$work/probes.txt" >&2 || fail "adapterd's probes differ (- expected, + rendered)"
env_of "$work/serve.yaml" >"$work/env.txt"
cat >"$work/serve-env.txt" <<'ENV'
Deployment CUDA_CACHE_PATH=/tmp/cuda-cache
Deployment ADAPTERCI_DATABASE_URL<-secret adapterci-db/url
Deployment ADAPTERCI_REGISTRY_URL=s3://adapters/registry
Deployment ADAPTERCI_DATASETS_URL=s3://adapters/datasets
Deployment ADAPTERCI_LOG=info
Deployment envFrom secret adapterci-s3
ENV
diff -u "$work/serve-env.txt" "$work/env.txt" >&2 || fail "the serving replicas' environment differs (- expected, + rendered)"
pod_of "$work/serve.yaml" >"$work/pods.txt"
cat >"$work/serve-pods.txt" <<'PODS'
Deployment pod serviceAccountName=adapterci-adapterci
Deployment pod automountServiceAccountToken=false
Deployment pod securityContext.fsGroup=65532
Deployment pod securityContext.fsGroupChangePolicy=OnRootMismatch
Deployment pod securityContext.runAsGroup=65532
Deployment pod securityContext.runAsNonRoot=true
Deployment pod securityContext.runAsUser=65532
Deployment pod securityContext.seccompProfile.type=RuntimeDefault
Deployment pod nodeSelector.nvidia.com/gpu.present=true
Deployment pod tolerations[0].effect=NoSchedule
Deployment pod tolerations[0].key=nvidia.com/gpu
Deployment pod tolerations[0].operator=Exists
Deployment pod labels.app.kubernetes.io/component=serve
Deployment pod labels.app.kubernetes.io/instance=adapterci
Deployment pod labels.app.kubernetes.io/name=adapterci-serve
Deployment adapterd securityContext.allowPrivilegeEscalation=false
Deployment adapterd securityContext.capabilities.drop=["ALL"]
Deployment adapterd securityContext.readOnlyRootFilesystem=true
Deployment adapterd limits.nvidia.com/gpu=1
Deployment adapterd mount /data<-emptyDir
Deployment adapterd mount /models<-persistentVolumeClaim read-only
Deployment adapterd mount /tmp<-emptyDir
PODS
diff -u "$work/serve-pods.txt" "$work/pods.txt" >&2 \
  || fail "the serving replicas' account, security or scheduling differ (- expected, + rendered)"
# adapterd's Service picks adapterd's pod only; without serving.* scheduling the replicas are scheduled as adapterd
"$helm" template adapterci "$chart" "${serving_values[@]}" --show-only templates/service.yaml >"$work/service.yaml"
serve_of "$work/service.yaml" | grep -qxF 'Service adapterci-adapterci type=ClusterIP selector={"app.kubernetes.io/instance": "adapterci", "app.kubernetes.io/name": "adapterci"}' \
  || fail "adapterd's Service selects more than adapterd's pod"
"$helm" template adapterci "$chart" -f "$chart/ci/eks-gpu-values.yaml" -f "$chart/ci/serving-values.yaml" \
  --set serving.nodeSelector=null,serving.tolerations=null --show-only templates/serving.yaml >"$work/serve.yaml" \
  || fail "no serving replicas on the GPU pool's values"
pod_of "$work/serve.yaml" >"$work/pods.txt"
for line in 'Deployment pod nodeSelector.nvidia.com/gpu.present=true' 'Deployment pod tolerations[0].key=nvidia.com/gpu' \
  'Deployment pod priorityClassName=adapterci-serving' 'Deployment pod imagePullSecrets[0].name=registry-credentials' \
  'Deployment pod labels.team=ml-platform' \
  'Deployment pod affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=nvidia.com/gpu.product'; do
  grep -qxF "$line" "$work/pods.txt" || { cat "$work/pods.txt" >&2; fail "the serving replicas lack adapterd's $line"; }
done
printf 'check_chart: serving replicas: the Deployment, its Service, environment and pods as expected; none by default\n' >&2

# the data volume: the chart's claim, kept by helm uninstall unless persistence.keep is false; or an existing claim,
# with none rendered
data_volume() {
  "$helm" template adapterci "$chart" "$@" >"$work/data.yaml" || fail "helm template $* failed"
  python3 - "$work/data.yaml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    if doc["kind"] == "PersistentVolumeClaim":
        policy = (doc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy", "none")
        print(f"claim {doc['metadata']['name']} resource-policy={policy}")
    if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-adapterci"):
        for volume in doc["spec"]["template"]["spec"]["volumes"]:
            if volume["name"] == "data":
                print(f"adapterd data<-{volume['persistentVolumeClaim']['claimName']}")
PY
}
expect_data_volume() {
  local expected=$1
  shift
  data_volume "$@" >"$work/data.txt"
  printf '%s\n' "$expected" | diff -u - "$work/data.txt" >&2 || fail "the data volume with '$*' differs (- expected, + rendered)"
}
expect_data_volume $'claim adapterci-adapterci-data resource-policy=keep\nadapterd data<-adapterci-adapterci-data'
expect_data_volume $'claim adapterci-adapterci-data resource-policy=none\nadapterd data<-adapterci-adapterci-data' \
  --set persistence.keep=false
expect_data_volume 'adapterd data<-adapterci-data-kept' --set-string persistence.existingClaim=adapterci-data-kept
printf 'check_chart: data volume: the claim kept by helm uninstall, or an existing claim and none rendered\n' >&2

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
--set-string|persistence.existingClaim=Data_Claim|'/persistence/existingClaim'
--set-string|persistence.keep=yes|'/persistence/keep'
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
--set-string|migration.nodeSelector.gpu=yes please|'/migration/nodeSelector/gpu'
--set|migration.nodeSelector.kubernetes\.io/arch=1|'/migration/nodeSelector/kubernetes.io~1arch'
--set-string|migration.nodeSelector=amd64|'/migration/nodeSelector'
--set-string|migration.tolerations[0].key=dedicated,migration.tolerations[0].effect=NoScheduled|'/migration/tolerations/0/effect'
--set-string|migration.tolerations[0].keys=dedicated|'/migration/tolerations/0'|additional properties 'keys'
--set-string|migration.tolerations.key=dedicated|'/migration/tolerations'
--set-string|migration.affinity.nodeAfinity.x=y|'/migration/affinity'|additional properties 'nodeAfinity'
--set|migration.podAnnotations.cluster-autoscaler\.kubernetes\.io/safe-to-evict=false|'/migration/podAnnotations/cluster-autoscaler.kubernetes.io~1safe-to-evict'
--set-string|migration.podLabels.app\.kubernetes\.io/name=other|'/migration/podLabels/app.kubernetes.io~1name'
--set-string|migration.podLabels.app\.kubernetes\.io/instance=other|'/migration/podLabels/app.kubernetes.io~1instance'
--set-string|migration.podLabels.app\.kubernetes\.io/component=other|'/migration/podLabels/app.kubernetes.io~1component'
--set-string|migration.podLabels.team=ml platform|'/migration/podLabels/team'
--set-string|migration.resources.limits.memory=lots|'/migration/resources/limits/memory'
--set|migration.resources.requests.cpu=-1|'/migration/resources/requests/cpu'
--set-string|migration.resources.request.cpu=1|'/migration/resources'|additional properties 'request'
--set-string|migration.resources=small|'/migration/resources'
--set-string|migration.serviceAccountName=other|'/migration'|additional properties 'serviceAccountName'
--set-string|migration=anywhere|'/migration'
--set-string|database.url=postgres://db/a,serviceAccount.name=adapterci-adapterci-migrate|serviceAccount.name adapterci-adapterci-migrate
--set-string|executor=thread|'/executor'
--set-string|executor=Kubernetes|'/executor'
--set|executor=true|'/executor'
--set-string|executor=kubernetes|executor kubernetes|registry.url ""|kubeStagingUrl
--set-string|executor=kubernetes,registry.url=file:///srv/registry|executor kubernetes|registry.url "file:///srv/registry"|kubeStagingUrl
--set-string|kubeStagingUrl=file:///srv/staging|'/kubeStagingUrl'
--set-string|kubeStagingUrl=gs://bucket/staging|'/kubeStagingUrl'
--set|kubeJobTtlSeconds=59|'/kubeJobTtlSeconds'
--set|kubeStartTimeoutSeconds=-1|'/kubeStartTimeoutSeconds'
--set-string|kubeStartTimeoutSeconds=1800|'/kubeStartTimeoutSeconds'
--set|kubeJobTtlSeconds=0|'/kubeJobTtlSeconds'
--set|kubeJobTtlSeconds=3600.5|'/kubeJobTtlSeconds'
--set-string|kubeJobTtlSeconds=3600|'/kubeJobTtlSeconds'
--set-string|kubeJobTTLSeconds=3600|additional properties 'kubeJobTTLSeconds'
--set-string|executor=kubernetes,registry.url=s3://a/r,serviceAccount.name=adapterci-adapterci-trainer|serviceAccount.name adapterci-adapterci-trainer
--set|serviceAccount.create=false,executor=kubernetes,registry.url=s3://a/r|executor kubernetes|serviceAccount.create|serviceAccount.name
--set-string|trainer=gpu|'/trainer'
--set-string|trainer.nodeSelector=gpu|'/trainer/nodeSelector'
--set|trainer.nodeSelector.nvidia\.com/gpu\.present=true|'/trainer/nodeSelector/nvidia.com~1gpu.present'
--set-string|trainer.tolerations.key=nvidia.com/gpu|'/trainer/tolerations'
--set-string|trainer.tolerations[0].key=nvidia.com/gpu,trainer.tolerations[0].effect=NoScheduled|'/trainer/tolerations/0/effect'
--set-string|trainer.tolerations[0].keys=nvidia.com/gpu|'/trainer/tolerations/0'|additional properties 'keys'
--set-string|trainer.affinity.nodeAfinity.x=y|'/trainer/affinity'|additional properties 'nodeAfinity'
--set-string|trainer.affinity=gpu|'/trainer/affinity'
--set|trainer.podAnnotations.karpenter\.sh/do-not-disrupt=true|'/trainer/podAnnotations/karpenter.sh~1do-not-disrupt'
--set-string|trainer.podLabels.app\.kubernetes\.io/name=other|'/trainer/podLabels/app.kubernetes.io~1name'
--set-string|trainer.podLabels.app\.kubernetes\.io/instance=other|'/trainer/podLabels/app.kubernetes.io~1instance'
--set-string|trainer.podLabels.app\.kubernetes\.io/component=other|'/trainer/podLabels/app.kubernetes.io~1component'
--set-string|trainer.podLabels.app\.kubernetes\.io/managed-by=other|'/trainer/podLabels/app.kubernetes.io~1managed-by'
--set-string|trainer.podLabels.adapterci\.dev/run=other|'/trainer/podLabels/adapterci.dev~1run'
--set-string|trainer.podLabels.app\.kubernetes\.io/version=other|'/trainer/podLabels/app.kubernetes.io~1version'
--set-string|trainer.podLabels.job-name=other|'/trainer/podLabels/job-name'
--set-string|trainer.podLabels.controller-uid=other|'/trainer/podLabels/controller-uid'
--set-string|trainer.podLabels.batch\.kubernetes\.io/job-name=other|'/trainer/podLabels/batch.kubernetes.io~1job-name'
--set-string|trainer.podLabels.team=ml platform|'/trainer/podLabels/team'
--set-string|trainer.tmpSizeLimit=lots|'/trainer/tmpSizeLimit'
--set|trainer.tmpSizeLimit=2|'/trainer/tmpSizeLimit'
--set-string|trainer.resources.limits.nvidia\.com/gpu=1|'/trainer'|additional properties 'resources'
--set-string|trainer.serviceAccountName=other|'/trainer'|additional properties 'serviceAccountName'
--set-string|trainer.args={--threads=4}|'/trainer'|additional properties 'args'
--set-string|imagePullSecrets=registry-credentials|'/imagePullSecrets'
--set|imagePullSecrets={registry-credentials}|'/imagePullSecrets/0'
--set-string|imagePullSecrets[0].name=Registry_Credentials|'/imagePullSecrets/0/name'
--set|imagePullSecrets[0].name=1|'/imagePullSecrets/0/name'
--set-string|imagePullSecrets[0].secret=registry-credentials|'/imagePullSecrets/0'|additional properties 'secret'
--set-string|imagePullSecrets[0].name=a,imagePullSecrets[1].name=a|'/imagePullSecrets'
--set-string|imagePullSecret[0].name=registry-credentials|additional properties 'imagePullSecret'
--set-string|priorityClassName=High Priority|'/priorityClassName'
--set|priorityClassName=1000|'/priorityClassName'
--set-string|priorityClassName.name=high|'/priorityClassName'
--set-string|migration.imagePullSecrets=registry-credentials|'/migration/imagePullSecrets'
--set-string|migration.imagePullSecrets[0].name=registry credentials|'/migration/imagePullSecrets/0/name'
--set-string|migration.priorityClassName=Batch|'/migration/priorityClassName'
--set|migration.priorityClassName=true|'/migration/priorityClassName'
--set|migration.ttlSecondsAfterFinished=59|'/migration/ttlSecondsAfterFinished'
--set-string|migration.ttlSecondsAfterFinished=86400|'/migration/ttlSecondsAfterFinished'
--set-string|trainer.priorityClassName=Training_Low|'/trainer/priorityClassName'
--set|trainer.priorityClassName=100|'/trainer/priorityClassName'
--set-string|trainer.imagePullSecrets[0].name=registry-credentials|'/trainer'|additional properties 'imagePullSecrets'
--set|serving.replicas=2|serving.replicas 2|database.url or database.existingSecret (PostgreSQL)
--set|serving.replicas=1,database.url=postgres://db/a|serving.replicas 1|registry.url ""|s3://
--set|serving.replicas=1,database.existingSecret=adapterci-db,registry.url=file:///srv/registry|registry.url "file:///srv/registry"|s3://
--set|serving.replicas=-1|'/serving/replicas'
--set-string|serving.replicas=2|'/serving/replicas'
--set|serving.replicas=1.5|'/serving/replicas'
--set-string|serving.dataSizeLimit=lots|'/serving/dataSizeLimit'
--set|serving.dataSizeLimit=10|'/serving/dataSizeLimit'
--set-string|serving.service.type=Ingress|'/serving/service/type'
--set|serving.service.port=0|'/serving/service/port'
--set-string|serving.resources=small|'/serving/resources'
--set-string|serving.nodeSelector=gpu|'/serving/nodeSelector'
--set-string|serving.tolerations.key=nvidia.com/gpu|'/serving/tolerations'
--set-string|serving.image=adapterci/other|'/serving'|additional properties 'image'
--set-string|serving=3|'/serving'
BAD
printf 'check_chart: %d bad values refused, each naming its field\n' "$count" >&2
