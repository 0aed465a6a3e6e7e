//! `adapterctl adapters promote|rollback|pin|deprecate|channels|lineage|diff|gc|export|import` run in-process (the
//! command code of the adapterctl crate, its ApiClient and real HTTP) against a started adapterd on SQLite and
//! local files: each command's effect is read back from the server, and a user's mistakes (unknown adapter,
//! version or channel, a pinned channel, another base) come back as errors that name them, with the CLI's exit
//! statuses. A merged export cut off midway (a stand-in server) leaves no model file behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use adapterci_api::{ApiClient, ApiError};
use adapterci_core::Digest;
use adapterci_core::training::{AdapterConfig, LoraTarget};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::lora::LoraWeights;
use adapterci_engine::lora::merge::merged_state_dict;
use adapterci_engine::model::BaseModel;
use adapterci_server::{RunningServer, ServerConfig};
use adapterci_testkit::registry_conformance::publish_request;
use adapterctl::cli::Cli;
use adapterctl::exit::{CliError, ExitStatus};
use adapterctl::output::{Output, OutputFormat};
use clap::Parser;

async fn start(dir: &Path) -> RunningServer {
    let model = dir.join("tiny.gguf");
    adapterci_engine::tiny::write_tiny_model(&model, 3).expect("tiny model written");
    let mut config = ServerConfig::embedded(dir.join("data"), model.clone());
    config.models = vec![("tiny".to_string(), model)];
    config.tick_ms = 0;
    config.refresh_secs = 0;
    config.no_worker = true;
    // No base-model watcher: a test that rewrites the model file must not start a rebase.
    config.base_watch_ms = 0;
    adapterci_server::start(config).await.expect("adapterd starts")
}

/// Runs `adapterctl --server URL ARGS...` as the binary would, printing JSON (captured by the test harness).
async fn adapterctl(server: &RunningServer, args: &[&str]) -> Result<ExitStatus, CliError> {
    adapterctl_at(&server.url(), args).await
}

async fn adapterctl_at(url: &str, args: &[&str]) -> Result<ExitStatus, CliError> {
    let argv = ["adapterctl", "--server", url, "-o", "json"].into_iter().chain(args.iter().copied());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|err| panic!("{args:?} does not parse: {err}"));
    adapterctl::commands::run(cli, Output::new(OutputFormat::Json, true)).await
}

async fn refused(server: &RunningServer, args: &[&str], status: ExitStatus, expect: &str) {
    match adapterctl(server, args).await {
        Err(err) => {
            assert_eq!(err.status, status, "{args:?}: {err:?}");
            assert!(err.message.contains(expect), "{args:?}: expected {expect:?} in {:?}", err.message);
        }
        Ok(status) => panic!("{args:?} succeeded with {status:?}"),
    }
}

async fn stable(client: &ApiClient) -> (u64, bool) {
    let channels = client.list_channels("support").await.unwrap();
    let stable = channels.iter().find(|c| c.channel == "stable").expect("stable exists");
    (stable.version, stable.pinned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapterctl_manages_channels_and_versions_of_a_running_adapterd() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    let registry = &server.state.controller.ports().registry;
    for seed in 1..=3u8 {
        let mut request = publish_request("support", &[seed; 64]);
        request.lineage.dataset_digests = vec![Digest::of(&[seed.min(2)])];
        registry.publish(request).await.unwrap();
    }
    let mut other_base = publish_request("support", &[4; 64]);
    other_base.lineage.base_model_digest = Digest::of(b"another base");
    registry.publish(other_base).await.unwrap();

    let ok = Ok(ExitStatus::Success);
    assert_eq!(adapterctl(&server, &["adapters", "promote", "support@1"]).await, ok);
    assert_eq!(adapterctl(&server, &["adapters", "promote", "support@3"]).await, ok);
    assert_eq!(stable(&client).await, (3, false));
    refused(&server, &["adapters", "promote", "support"], ExitStatus::Failure, "--allow-base-change").await;
    assert_eq!(stable(&client).await, (3, false), "a refused promote changes nothing");

    assert_eq!(adapterctl(&server, &["adapters", "rollback", "support"]).await, ok);
    assert_eq!(stable(&client).await, (1, false), "one command rolls back to the version served before");
    assert_eq!(adapterctl(&server, &["adapters", "rollback", "support", "--to", "3"]).await, ok);
    assert_eq!(stable(&client).await, (3, false));

    assert_eq!(adapterctl(&server, &["adapters", "pin", "support"]).await, ok);
    assert_eq!(stable(&client).await, (3, true));
    refused(&server, &["adapters", "promote", "support@2"], ExitStatus::Failure, "pinned to v3").await;
    assert_eq!(adapterctl(&server, &["adapters", "pin", "support", "--unpin"]).await, ok);
    assert_eq!(adapterctl(&server, &["adapters", "deprecate", "support@2"]).await, ok);
    refused(&server, &["adapters", "promote", "support@2", "--channel", "canary"], ExitStatus::Failure, "deprecated")
        .await;
    assert_eq!(adapterctl(&server, &["adapters", "promote", "support@4", "--allow-base-change"]).await, ok);
    assert_eq!(stable(&client).await, (4, false), "the base changes only when asked");

    assert_eq!(adapterctl(&server, &["adapters", "channels", "support"]).await, ok);
    assert_eq!(adapterctl(&server, &["adapters", "events", "--limit", "5"]).await, ok);
    assert_eq!(adapterctl(&server, &["adapters", "lineage", "support@3"]).await, ok);
    assert_eq!(adapterctl(&server, &["adapters", "diff", "support@1", "@4"]).await, ok);
    assert_eq!(adapterctl(&server, &["adapters", "gc", "--grace-secs", "0", "--keep-last", "3"]).await, ok);
    let pruned = client.get_adapter_manifest("support", 1).await;
    assert!(pruned.is_err(), "v1 is beyond the newest 3 and on no channel: {pruned:?}");
    for version in 2..=4 {
        let manifest = client.get_adapter_manifest("support", version).await.expect("gc kept every version");
        let digest = manifest["files"][0]["digest"].as_str().unwrap().to_string();
        assert!(digest.starts_with("sha256:"));
    }

    // Mistakes are named, with "not found" (4) or usage (2) statuses.
    refused(&server, &["adapters", "promote", "absent@1"], ExitStatus::NotFound, "absent").await;
    refused(&server, &["adapters", "promote", "support@9"], ExitStatus::NotFound, "adapter support has no version 9")
        .await;
    refused(&server, &["adapters", "rollback", "support", "--channel", "nightly"], ExitStatus::NotFound, "nightly")
        .await;
    refused(&server, &["adapters", "lineage", "support@7"], ExitStatus::NotFound, "has no version 7").await;
    refused(&server, &["adapters", "diff", "support@2", "other@2"], ExitStatus::NotFound, "other").await;
    refused(&server, &["adapters", "deprecate", "support"], ExitStatus::Usage, "support@VERSION").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapterctl_exports_a_version_for_peft_and_imports_a_peft_folder_as_a_new_version() {
    use adapterci_core::training::{AdapterConfig, LoraTarget};
    use adapterci_engine::lora::LoraWeights;
    use adapterci_engine::lora::peft::{import_peft, read_peft_dir};
    use adapterci_engine::model::BaseModel;

    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let model_path = dir.path().join("tiny.gguf");
    let base = BaseModel::load(&model_path, adapterci_engine::device::DeviceChoice::Cpu).unwrap();
    let config = AdapterConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![LoraTarget::Q, LoraTarget::Down],
        layers: vec![0, 1],
        dtype: "f32".to_string(),
    };
    let cpu = adapterci_engine::device::DeviceChoice::Cpu.resolve().unwrap();
    let lora = LoraWeights::init_standard(&config, 0.0, base.config(), 5, cpu).unwrap();
    let weights = lora.to_safetensors().unwrap();
    let mut request = publish_request("support", &weights);
    request.adapter = config.clone();
    request.lineage.base_model_name = "tiny".to_string();
    request.lineage.base_model_digest = base.digest().clone();
    let registry = &server.state.controller.ports().registry;
    registry.publish(request).await.unwrap();
    // a version bound to a base adapterd does not have
    let mut other = publish_request("support", b"other weights");
    other.lineage.base_model_name = "tiny".to_string();
    registry.publish(other).await.unwrap();

    let out = dir.path().join("peft");
    let out_arg = out.display().to_string();
    adapterctl(&server, &["adapters", "export", "support@1", "--out", &out_arg]).await.unwrap();
    let files = read_peft_dir(&out).unwrap();
    let peft_config: serde_json::Value = serde_json::from_str(&files.config_json).unwrap();
    assert_eq!((peft_config["r"].as_u64(), peft_config["lora_alpha"].as_u64()), (Some(4), Some(8)));
    assert_eq!(peft_config["target_modules"], serde_json::json!(["down_proj", "q_proj"]));
    let imported = import_peft(&files, base.config(), cpu).unwrap();
    assert_eq!(imported.config().rank, 4);
    assert_eq!(imported.to_safetensors().unwrap().len(), weights.len(), "the same tensors come back");

    // the folder imported back is a new adapter whose own export is the same PEFT adapter
    adapterctl(&server, &["adapters", "import", &out_arg, "--name", "support-copy", "--base", "tiny"]).await.unwrap();
    let copy_name = adapterci_core::AdapterName::new("support-copy").unwrap();
    let copy = server.state.controller.ports().registry.latest(&copy_name).await.unwrap().expect("imported");
    assert_eq!(copy.manifest.lineage.base_model_digest, *base.digest());
    assert_eq!(
        copy.manifest.lineage.initial_adapter,
        adapterci_core::training::InitialAdapterRef::Imported { format: "peft".to_string() }
    );
    let again = dir.path().join("again");
    let again_arg = again.display().to_string();
    adapterctl(&server, &["adapters", "export", "support-copy@1", "--out", &again_arg]).await.unwrap();
    assert_eq!(read_peft_dir(&again).unwrap(), files, "export -> import -> export is the identity");
    // a folder PEFT wrote for something we do not compute is refused by name; a broken config by its file
    let mut dora: serde_json::Value = peft_config.clone();
    dora["use_dora"] = serde_json::json!(true);
    std::fs::write(again.join("adapter_config.json"), serde_json::to_vec(&dora).unwrap()).unwrap();
    refused(&server, &["adapters", "import", &again_arg, "--name", "x", "--base", "tiny"], ExitStatus::Failure, "dora")
        .await;
    std::fs::write(again.join("adapter_config.json"), b"{not json").unwrap();
    refused(
        &server,
        &["adapters", "import", &again_arg, "--name", "x", "--base", "tiny"],
        ExitStatus::Failure,
        "not JSON",
    )
    .await;
    refused(&server, &["adapters", "import", &out_arg, "--name", "x", "--base", "nope"], ExitStatus::NotFound, "nope")
        .await;

    refused(&server, &["adapters", "export", "support@9", "--out", &out_arg], ExitStatus::NotFound, "no version 9")
        .await;
    refused(
        &server,
        &["adapters", "export", "support@2", "--out", &out_arg],
        ExitStatus::Failure,
        "not in adapterd's catalog",
    )
    .await;
    // the catalog model's file now holds other weights of the same shapes: PEFT files for v1 would claim a base
    // they were not trained on, so the export is refused naming both digests, as the merged export is
    adapterci_engine::tiny::write_tiny_model(&model_path, 4).unwrap();
    let now = BaseModel::load(&model_path, adapterci_engine::device::DeviceChoice::Cpu).unwrap();
    assert_eq!(now.config(), base.config(), "only the weights changed");
    let client = ApiClient::new(&server.url()).unwrap();
    match client.adapter_peft_file("support", 1, "adapter_config.json").await {
        Err(ApiError::Http { status: 409, error, .. }) => {
            let expected = format!(
                "support@1: it was trained on base tiny with digest {}, but {} now has digest {}",
                base.digest(),
                model_path.display(),
                now.digest()
            );
            assert_eq!(error.message, expected);
        }
        other => panic!("a changed base: {:?}", other.map(|bytes| bytes.len())),
    }
    refused(&server, &["adapters", "export", "support@1", "--out", &out_arg], ExitStatus::Failure, "now has digest")
        .await;
    server.shutdown().await;
}

/// The tensors of a safetensors file by name, read from its header: where each one's data lies in the file.
fn tensor_ranges(bytes: &[u8]) -> BTreeMap<String, std::ops::Range<usize>> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, entry)| {
            let [begin, end]: [usize; 2] = serde_json::from_value(entry["data_offsets"].clone()).unwrap();
            (name, 8 + header_len + begin..8 + header_len + end)
        })
        .collect()
}

/// A fresh adapter on `base` (B zero: merging it changes nothing), and one whose B matrices are not zero (a
/// trained adapter's stand-in, so merging changes weights) with its file: the fresh one's f32 B values rewritten.
fn adapters(base: &BaseModel, config: &AdapterConfig) -> (LoraWeights, LoraWeights, Vec<u8>) {
    let cpu = DeviceChoice::Cpu.resolve().unwrap();
    let fresh = LoraWeights::init_standard(config, 0.0, base.config(), 5, cpu).unwrap();
    let mut bytes = fresh.to_safetensors().unwrap();
    for (name, range) in tensor_ranges(&bytes) {
        if name.contains(".lora_B.") {
            for (i, value) in bytes[range].chunks_exact_mut(4).enumerate() {
                value.copy_from_slice(&((i as f32 * 0.7).sin() * 0.2).to_le_bytes());
            }
        }
    }
    let visible = LoraWeights::from_safetensors(&bytes, base.config(), cpu).unwrap();
    (fresh, visible, bytes)
}

/// Checks the merged export at `path`: it is the engine's merge of `lora` into `base` (whose values the engine's
/// tests check tensor by tensor against the weight plus `scale * B A`), under Hugging Face's tensor names, and it
/// differs from `base`'s own weights (`fresh` merged) in exactly the modules `lora` adapts.
fn check_merged(path: &Path, base: &BaseModel, lora: &LoraWeights, fresh: &LoraWeights) {
    let got = std::fs::read(path).unwrap();
    assert!(got == merged_state_dict(base.llama(), lora).unwrap(), "the export is the engine's merge into this base");
    let plain = merged_state_dict(base.llama(), fresh).unwrap();
    let (merged, own) = (tensor_ranges(&got), tensor_ranges(&plain));
    let config = base.config();
    let mut names = BTreeSet::from(["model.embed_tokens.weight".to_string(), "model.norm.weight".to_string()]);
    if !config.tie_word_embeddings {
        names.insert("lm_head.weight".to_string());
    }
    let mut adapted = BTreeSet::new();
    for layer in 0..config.num_layers {
        names.insert(format!("model.layers.{layer}.input_layernorm.weight"));
        names.insert(format!("model.layers.{layer}.post_attention_layernorm.weight"));
        for target in LoraTarget::ALL {
            let name = format!("model.layers.{layer}.{}.weight", target.hf_module());
            if lora.modules().contains(&(layer, target)) {
                adapted.insert(name.clone());
            }
            names.insert(name);
        }
    }
    assert_eq!(
        merged.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "the merged file has Hugging Face's tensor names"
    );
    assert_eq!(adapted.len(), lora.modules().len(), "every adapted module is checked");
    for name in &names {
        let changed = got[merged[name].clone()] != plain[own[name].clone()];
        assert_eq!(changed, adapted.contains(name), "{name}: changed by the merge only where the adapter adapts it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapterctl_exports_a_version_merged_into_the_base_it_was_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = ApiClient::new(&server.url()).unwrap();
    let model_path = dir.path().join("tiny.gguf");
    let base = BaseModel::load(&model_path, DeviceChoice::Cpu).unwrap();
    // q and down of layer 0 only: layer 1's q_proj and down_proj stay the base's
    let config = AdapterConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![LoraTarget::Q, LoraTarget::Down],
        layers: vec![0],
        dtype: "f32".to_string(),
    };
    let (fresh, lora, lora_file) = adapters(&base, &config);
    let mut request = publish_request("support", &lora_file);
    request.adapter = config.clone();
    request.lineage.base_model_digest = base.digest().clone();
    let registry = &server.state.controller.ports().registry;
    registry.publish(request.clone()).await.unwrap();
    // v2: the same adapter trained on a base release in adapterd's releases folder (the engine's frozen release
    // fixture, palettized from another tiny model of the same shape), found by the lineage's digest
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../adapterci-engine/tests/fixtures/base_release_v1.safetensors");
    let release_bytes = std::fs::read(&fixture).unwrap();
    let release_digest = Digest::of(&release_bytes);
    let release_path =
        adapterci_core::base_release::release_weights_path(&dir.path().join("data/releases"), &release_digest);
    std::fs::create_dir_all(release_path.parent().unwrap()).unwrap();
    std::fs::write(&release_path, &release_bytes).unwrap();
    let mut on_release = request.clone();
    on_release.lineage.base_model_digest = release_digest.clone();
    on_release.lineage.base_release_digest = Some(release_digest);
    registry.publish(on_release).await.unwrap();
    // v3: bound to a base adapterd does not have
    let mut elsewhere = request;
    elsewhere.lineage.base_model_digest = Digest::of(b"another base");
    registry.publish(elsewhere).await.unwrap();

    let out = dir.path().join("merged");
    let out_arg = out.display().to_string();
    assert_eq!(
        adapterctl(&server, &["adapters", "export", "support@1", "--out", &out_arg, "--merged"]).await,
        Ok(ExitStatus::Success)
    );
    let written: Vec<_> = std::fs::read_dir(&out).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(written, ["model.safetensors"], "the merged model alone, no PEFT files, no partial file");
    check_merged(&out.join("model.safetensors"), &base, &lora, &fresh);
    // two at once with one permit (the default): the second waits its turn rather than failing
    let (first, second) = (dir.path().join("merged-a"), dir.path().join("merged-b"));
    let (first_arg, second_arg) = (first.display().to_string(), second.display().to_string());
    let first_args = ["adapters", "export", "support@1", "--out", &first_arg, "--merged"];
    let second_args = ["adapters", "export", "support@1", "--out", &second_arg, "--merged"];
    let both = tokio::join!(adapterctl(&server, &first_args), adapterctl(&server, &second_args));
    assert_eq!(both, (Ok(ExitStatus::Success), Ok(ExitStatus::Success)));
    for out in [&first, &second] {
        check_merged(&out.join("model.safetensors"), &base, &lora, &fresh);
    }
    assert_eq!(server.state.merged_exports.permits.available_permits(), 1, "every permit is given back");

    let release_out = dir.path().join("merged-release");
    let release_arg = release_out.display().to_string();
    assert_eq!(
        adapterctl(&server, &["adapters", "export", "support@2", "--out", &release_arg, "--merged"]).await,
        Ok(ExitStatus::Success)
    );
    let release = BaseModel::load(&release_path, DeviceChoice::Cpu).unwrap();
    check_merged(&release_out.join("model.safetensors"), &release, &lora, &fresh);

    match client.adapter_merged_model("support", 9).await {
        Err(ApiError::Http { status: 404, error, .. }) => {
            assert!(error.message.contains("adapter support has no version 9"), "{error:?}");
        }
        other => panic!("an unknown version: {:?}", other.map(|download| download.content_length())),
    }
    refused(
        &server,
        &["adapters", "export", "support@9", "--out", &out_arg, "--merged"],
        ExitStatus::NotFound,
        "no version 9",
    )
    .await;
    refused(
        &server,
        &["adapters", "export", "support@3", "--out", &out_arg, "--merged"],
        ExitStatus::Failure,
        "not in adapterd's catalog",
    )
    .await;
    // the catalog model's file now holds other weights: merging v1 into them would be wrong, and is refused
    adapterci_engine::tiny::write_tiny_model(&model_path, 4).unwrap();
    refused(
        &server,
        &["adapters", "export", "support@1", "--out", &out_arg, "--merged"],
        ExitStatus::Failure,
        "now has digest",
    )
    .await;
    // every merged model was written to the scratch folder before it was sent, and none is left there
    let scratch = dir.path().join("data/scratch");
    assert!(scratch.is_dir(), "the exports wrote in {}", scratch.display());
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert!(left.is_empty(), "the scratch folder still has {left:?}");
    server.shutdown().await;
}

/// An adapterd stand-in on a socket of its own that knows `support@1` and sends its merged model cut off: it
/// announces 4096 bytes, sends 1000 and closes the connection, as a server that stops or a network that breaks
/// mid-download does. Raw HTTP/1.1, one request per connection, so what reaches the client is exactly that.
async fn cutting_server() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let versions = serde_json::json!([{
        "name": "support",
        "version": 1,
        "manifest_digest": Digest::of(b"manifest").to_string(),
        "base_model_digest": Digest::of(b"base").to_string(),
        "created_at": "2026-01-01T00:00:00Z",
    }])
    .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serve = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                let mut piece = [0u8; 1024];
                let read = socket.read(&mut piece).await.unwrap();
                assert!(read > 0, "the request ended before its head did");
                head.extend_from_slice(&piece[..read]);
            }
            let response = if String::from_utf8_lossy(&head).contains("/merged/") {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 4096\r\n\r\n";
                [head.as_bytes(), &[7u8; 1000]].concat()
            } else {
                let length = versions.len();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{versions}"
                )
                .into_bytes()
            };
            socket.write_all(&response).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    (url, serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_export_cut_off_midway_leaves_no_model_file() {
    let (url, server) = cutting_server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("merged");
    let out_arg = out.display().to_string();
    let err = adapterctl_at(&url, &["adapters", "export", "support@1", "--out", &out_arg, "--merged"])
        .await
        .expect_err("a download cut off is a failure");
    assert_eq!(err.status, ExitStatus::Failure, "{err:?}");
    assert!(err.message.contains("merged/model.safetensors"), "the failed request is named: {err:?}");
    assert!(err.hints.iter().any(|hint| hint.contains("was not written")), "{err:?}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert!(left.is_empty(), "neither model.safetensors nor its partial file is left: {left:?}");
    server.abort();
}
