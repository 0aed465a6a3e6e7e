//! The Job built from a template and a run's resources, checked as the YAML the API server would receive, and
//! the templates refused at start-up with the file and the field named.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

/// A template such as the chart renders: env from a secret, a service account, a node selector, a toleration and
/// security contexts, all of which must reach the pod unchanged.
const TEMPLATE: &str = r#"
metadata:
  labels:
    team: ml
spec:
  serviceAccountName: adapterci-trainer
  nodeSelector:
    nvidia.com/gpu.present: "true"
  tolerations:
    - key: nvidia.com/gpu
      operator: Exists
      effect: NoSchedule
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
  containers:
    - name: trainer
      image: ghcr.io/example/adapterd:1.2.3
      env:
        - name: AWS_ACCESS_KEY_ID
          valueFrom:
            secretKeyRef: { name: adapterci-s3, key: access-key-id }
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
      resources:
        requests:
          ephemeral-storage: 20Gi
"#;

fn template(text: &str) -> Result<JobTemplate, String> {
    JobTemplate::parse(text, Path::new("/etc/adapterci/job-template.yaml"))
}

fn build(resources: LaunchResources) -> serde_yaml::Value {
    let job = template(TEMPLATE).unwrap().build(&JobRequest {
        run_id: "0193a5b2-7c1e-7d3a-9f00-1234567890ab",
        staging_url: "s3://bucket/adapterci/staging",
        resources: &resources,
        ttl_after_finished: Some(Duration::from_secs(3600)),
    });
    // what goes to the API server, as YAML: field names as Kubernetes spells them
    let yaml = serde_yaml::to_string(&job).unwrap();
    serde_yaml::from_str(&yaml).unwrap()
}

fn at<'a>(value: &'a serde_yaml::Value, path: &str) -> &'a serde_yaml::Value {
    path.split('.').fold(value, |value, key| match key.parse::<usize>() {
        Ok(index) => &value[index],
        Err(_) => &value[key],
    })
}

fn check(value: &serde_yaml::Value, path: &str, expect: &str) {
    let got = at(value, path);
    let got = match got {
        serde_yaml::Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
    };
    assert_eq!(got, expect, "{path}");
}

#[test]
fn the_job_has_the_runs_name_labels_args_and_resources() {
    let timeout = Some(Duration::from_secs(1800));
    let resources = LaunchResources { cpus: Some(2.5), memory_bytes: Some(8 << 30), gpus: 1, timeout };
    let job = build(resources);
    check(&job, "apiVersion", "batch/v1");
    check(&job, "kind", "Job");
    check(&job, "metadata.name", "adapterci-train-0193a5b2-7c1e-7d3a-9f00-1234567890ab");
    for labels in ["metadata.labels", "spec.template.metadata.labels"] {
        let labels = at(&job, labels);
        assert_eq!(labels["app.kubernetes.io/managed-by"].as_str(), Some("adapterd"));
        assert_eq!(labels["adapterci.dev/run"].as_str(), Some("0193a5b2-7c1e-7d3a-9f00-1234567890ab"));
    }
    check(&job, "spec.template.metadata.labels.team", "ml");
    check(&job, "metadata.labels.team", "ml");
    check(&job, "spec.backoffLimit", "0");
    check(&job, "spec.podFailurePolicy.rules.0.action", "Ignore");
    check(&job, "spec.podFailurePolicy.rules.0.onPodConditions.0.type", "DisruptionTarget");
    check(&job, "spec.podFailurePolicy.rules.0.onPodConditions.0.status", "True");
    assert_eq!(at(&job, "spec.podFailurePolicy.rules").as_sequence().map(Vec::len), Some(1));
    check(&job, "spec.activeDeadlineSeconds", "1800");
    check(&job, "spec.ttlSecondsAfterFinished", "3600");
    check(&job, "spec.template.spec.restartPolicy", "Never");
    let container = at(&job, "spec.template.spec.containers.0");
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(
        args,
        ["train-job", "--staged", "s3://bucket/adapterci/staging", "--run", "0193a5b2-7c1e-7d3a-9f00-1234567890ab"]
    );
    let resources = &container["resources"];
    assert_eq!(resources["requests"]["cpu"].as_str(), Some("2500m"));
    assert_eq!(resources["limits"]["cpu"].as_str(), Some("2500m"));
    assert_eq!(resources["requests"]["memory"].as_str(), Some("8589934592"));
    assert_eq!(resources["limits"]["memory"].as_str(), Some("8589934592"));
    assert_eq!(resources["limits"]["nvidia.com/gpu"].as_str(), Some("1"));
    assert!(resources["requests"].get("nvidia.com/gpu").is_none(), "an extended resource is requested by its limit");
    assert_eq!(resources["requests"]["ephemeral-storage"].as_str(), Some("20Gi"), "the template's request stays");
    let env = container["env"].as_sequence().unwrap();
    assert_eq!(env[0]["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("adapterci-s3"));
    assert_eq!(env[1]["name"].as_str(), Some("ADAPTERCI_THREADS"));
    assert_eq!(env[1]["value"].as_str(), Some("3"), "2.5 CPUs: 3 threads");
}

#[test]
fn the_job_is_labelled_as_its_pod_but_not_annotated_as_it() {
    let text = r#"
metadata:
  labels: { app.kubernetes.io/instance: prod, app.kubernetes.io/name: adapterci-trainer }
  annotations: { karpenter.sh/do-not-disrupt: "true" }
spec:
  containers:
    - { name: trainer, image: adapterd:1 }
"#;
    let resources = LaunchResources::default();
    let job = template(text).unwrap().build(&JobRequest {
        run_id: "run-1",
        staging_url: "/shared/staging",
        resources: &resources,
        ttl_after_finished: None,
    });
    let job: serde_yaml::Value = serde_yaml::from_str(&serde_yaml::to_string(&job).unwrap()).unwrap();
    let expected: serde_yaml::Value = serde_yaml::from_str(
        "{ app.kubernetes.io/instance: prod, app.kubernetes.io/name: adapterci-trainer, \
           app.kubernetes.io/managed-by: adapterd, adapterci.dev/run: run-1 }",
    )
    .unwrap();
    assert_eq!(at(&job, "metadata.labels"), &expected);
    assert_eq!(at(&job, "spec.template.metadata.labels"), &expected);
    let pod_annotations = at(&job, "spec.template.metadata.annotations");
    assert_eq!(pod_annotations["karpenter.sh/do-not-disrupt"].as_str(), Some("true"), "{pod_annotations:?}");
    let annotations: serde_yaml::Value = serde_yaml::from_str("{ adapterci.dev/run-id: run-1 }").unwrap();
    assert_eq!(at(&job, "metadata.annotations"), &annotations, "the pod's annotations stay the pod's");
}

#[test]
fn what_the_template_says_about_the_pod_is_kept() {
    let job = build(LaunchResources::default());
    let pod = at(&job, "spec.template.spec");
    assert_eq!(pod["serviceAccountName"].as_str(), Some("adapterci-trainer"));
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"].as_str(), Some("true"));
    assert_eq!(pod["tolerations"][0]["key"].as_str(), Some("nvidia.com/gpu"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(10001));
    let container = &pod["containers"][0];
    assert_eq!(container["image"].as_str(), Some("ghcr.io/example/adapterd:1.2.3"));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false));
    // no resources asked: none set beyond the template's, no deadline, no thread count
    assert!(container["resources"].get("limits").is_none(), "{container:?}");
    assert!(job["spec"].get("activeDeadlineSeconds").is_none());
    assert_eq!(container["env"].as_sequence().map(Vec::len), Some(1));
}

#[test]
fn the_trainer_is_the_container_named_trainer() {
    let text = r#"
spec:
  containers:
    - { name: proxy, image: envoy:1 }
    - { name: trainer, image: adapterd:1 }
"#;
    let template = template(text).unwrap();
    assert_eq!(template.trainer_container(), "trainer");
    let resources = LaunchResources::default();
    let job = template.build(&JobRequest {
        run_id: "r",
        staging_url: "/shared/staging",
        resources: &resources,
        ttl_after_finished: None,
    });
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert!(pod.containers[0].args.is_none(), "the sidecar is left alone");
    assert_eq!(pod.containers[1].args.as_ref().map(Vec::len), Some(5));
}

#[test]
fn job_names_are_dns_labels_distinct_per_run() {
    assert_eq!(job_name("run-1"), "adapterci-train-run-1");
    let long = "a".repeat(100);
    for run_id in ["Run_With_Caps", long.as_str(), "--", "x.y", "ends-with-"] {
        let name = job_name(run_id);
        assert!(is_dns_label(&name), "{run_id:?} -> {name:?}");
        assert!(name.len() <= 63, "{name}");
    }
    assert_ne!(job_name(&"a".repeat(100)), job_name(&"a".repeat(101)), "truncated names keep a hash of the id");
    assert_ne!(job_name("Run_1"), job_name("run-1"));
    assert_eq!(label_value("run-1"), "run-1");
    let hashed = label_value(&long);
    assert!(hashed.len() <= 63 && !hashed.starts_with('-'), "{hashed}");
}

fn refused(text: &str, expect: &str) {
    let error = template(text).unwrap_err();
    assert!(error.starts_with("/etc/adapterci/job-template.yaml: "), "{error}");
    assert!(error.contains(expect), "{error}");
}

#[test]
fn bad_templates_are_refused_naming_the_file_and_the_field() {
    refused("spec: [unclosed", "not valid YAML");
    refused("metadata: {}\n", "spec: missing");
    refused("spec: {}\n", "spec.containers: the pod template needs a container");
    refused("spec:\n  containers: []\n", "spec.containers: the pod template needs a container");
    refused("spec:\n  containers:\n    - name: trainer\n", "spec.containers[0].image: missing");
    refused("spec:\n  containers:\n    - image: adapterd:1\n", "spec.containers[0].name: missing");
    refused(
        "spec:\n  containers:\n    - { name: trainer, image: a, args: [serve] }\n",
        "spec.containers[0].args: set by adapterd",
    );
    refused(
        "spec:\n  restartPolicy: OnFailure\n  containers:\n    - { name: trainer, image: a }\n",
        "spec.restartPolicy: OnFailure",
    );
    refused("spec:\n  containers:\n    - { name: trainer, image: a, resources: 3 }\n", "not a pod template");
    let pod = "spec:\n  containers:\n    - { name: trainer, image: a }\n";
    for (label, whose) in [
        ("app.kubernetes.io/managed-by", "set by adapterd"),
        ("adapterci.dev/run", "set by adapterd"),
        ("job-name", "set by the Job controller"),
        ("batch.kubernetes.io/controller-uid", "set by the Job controller"),
    ] {
        let text = format!("metadata:\n  labels:\n    {label}: x\n{pod}");
        refused(&text, &format!("metadata.labels.{label}: {whose}"));
    }
    refused(
        &format!("metadata:\n  annotations:\n    adapterci.dev/run-id: x\n{pod}"),
        "metadata.annotations.adapterci.dev/run-id: set by adapterd",
    );
    refused(&format!("podFailurePolicy: {{rules: []}}\n{pod}"), "podFailurePolicy: a Job's field, which adapterd sets");
    refused(
        "spec:\n  backoffLimit: 3\n  containers:\n    - { name: trainer, image: a }\n",
        "spec.backoffLimit: a Job's field",
    );
    let missing = JobTemplate::load(Path::new("/nonexistent/template.yaml")).unwrap_err();
    assert!(missing.contains("/nonexistent/template.yaml"), "{missing}");
}
