//! `open_object_store`: each URL form opens the store it names, and bad URLs are refused with the reason.

use std::collections::HashMap;

use adapterci_core::ports::RegistryError;
use adapterci_registry::object_store::ObjectStoreExt;
use adapterci_registry::object_store::path::Path;
use adapterci_registry::{open_object_store, open_object_store_with_env};

async fn write_and_read_back(url: &str) {
    let store = open_object_store(url).expect("open the store");
    store.put(&Path::from("probe/file.txt"), b"probe".to_vec().into()).await.expect("write");
    let bytes = store.get(&Path::from("probe/file.txt")).await.expect("read").bytes().await.expect("read");
    assert_eq!(bytes.as_ref(), b"probe", "{url}");
}

#[tokio::test]
async fn file_urls_and_plain_paths_open_a_directory_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let by_url = dir.path().join("by-url/nested");
    write_and_read_back(&format!("file://{}", by_url.display())).await;
    assert!(by_url.join("probe/file.txt").is_file());

    let by_path = dir.path().join("by-path");
    write_and_read_back(by_path.to_str().unwrap()).await;
    assert!(by_path.join("probe/file.txt").is_file());
}

#[tokio::test]
async fn memory_urls_open_a_fresh_store_each_time() {
    write_and_read_back("memory://").await;
    let fresh = open_object_store("memory://").unwrap();
    assert!(fresh.head(&Path::from("probe/file.txt")).await.is_err());
}

fn check_refused(url: &str, expect: &str) {
    match open_object_store_with_env(url, &|_| None) {
        Err(err @ RegistryError::InvalidRequest { .. }) => {
            let text = err.to_string();
            assert!(text.contains(expect), "{url:?}: expected {expect:?} in {text}");
            assert!(text.contains(&format!("{url:?}")), "the error names the url: {text}");
        }
        Err(other) => panic!("{url:?}: expected an invalid request, got {other}"),
        Ok(store) => panic!("{url:?}: expected a refusal, got {store}"),
    }
}

#[test]
fn bad_urls_are_refused_with_the_reason() {
    check_refused("", "must not be empty");
    check_refused("ftp://host/dir", "unsupported scheme \"ftp\"");
    check_refused("gs://bucket", "unsupported scheme \"gs\"");
    check_refused("memory://something", "memory:// takes no path");
    check_refused("file://host/dir", "a file url needs an absolute path and no host");
    check_refused("s3://", "bucket name is missing");
    check_refused("s3://bucket/a//b", "prefix must not contain empty segments");
    check_refused("s3://bucket/p?versionId=1", "no query or fragment");
}

#[test]
fn s3_urls_are_configured_from_the_environment_without_contacting_the_store() {
    let env: HashMap<&str, &str> = HashMap::from([
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:8333"),
        ("AWS_ACCESS_KEY_ID", "key"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ]);
    let lookup = |key: &str| env.get(key).map(|value| value.to_string());
    // Building contacts nothing; the round trip against a real S3 (SeaweedFS) is an end-to-end test.
    let prefixed = open_object_store_with_env("s3://adapters/registry/prod/", &lookup).unwrap();
    assert_eq!(prefixed.to_string(), "PrefixObjectStore(registry/prod)");
    let bare = open_object_store_with_env("s3://adapters", &lookup).unwrap();
    assert_eq!(bare.to_string(), "AmazonS3(adapters)");
}
