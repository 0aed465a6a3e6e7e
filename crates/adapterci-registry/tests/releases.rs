//! Base releases in the registry store (`ReleaseStore`) on a real local directory store with the real SQLite index:
//! uploaded once and skipped when already there, refused when the local weights are not the release, fetched and
//! verified into a releases folder, refused (with the release and the key named) when missing or corrupt, and left
//! alone by garbage collection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path as FsPath;
use std::sync::Arc;

use adapterci_core::Digest;
use adapterci_core::base_release::{RELEASE_RECOVERY_FILE, RELEASE_WEIGHTS_FILE};
use adapterci_core::ports::RegistryError;
use adapterci_registry::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use adapterci_registry::{ObjectStoreRegistry, RELEASE_INDEX_FILE, ReleaseUpload, open_object_store};
use adapterci_store::SeaStore;
use chrono::Duration;

/// A registry on SQLite and a local directory below `dir`, and its store.
async fn registry(dir: &FsPath) -> (ObjectStoreRegistry, Arc<dyn ObjectStore>) {
    let database = format!("sqlite://{}/meta.db?mode=rwc", dir.display());
    let index = Arc::new(SeaStore::connect(&database).await.unwrap());
    let store = open_object_store(&dir.join("store").display().to_string()).unwrap();
    (ObjectStoreRegistry::new(store.clone(), index), store)
}

/// Writes a release (weights `weights`, a recovery adapter) into `releases/<digest hex>/`; returns its digest.
fn local_release(releases: &FsPath, weights: &[u8]) -> Digest {
    let digest = Digest::of(weights);
    let dir = releases.join(digest.hex());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(RELEASE_WEIGHTS_FILE), weights).unwrap();
    std::fs::write(dir.join(RELEASE_RECOVERY_FILE), recovery_of(weights)).unwrap();
    digest
}

fn recovery_of(weights: &[u8]) -> Vec<u8> {
    weights.iter().rev().copied().collect()
}

/// Every file name in `dir`, sorted.
fn names_in(dir: &FsPath) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_release_uploads_once_and_downloads_whole_into_another_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _store) = registry(dir.path()).await;
    let weights = b"palettized weights of a tiny release".repeat(50);
    let release = local_release(&dir.path().join("built"), &weights);
    // in parts: the threshold is below the file's size
    let releases = registry.releases().with_multipart_threshold(64);

    let built = dir.path().join("built").join(release.hex());
    assert_eq!(releases.upload(&release, &built).await.unwrap(), ReleaseUpload::Uploaded);
    assert_eq!(releases.upload(&release, &built).await.unwrap(), ReleaseUpload::AlreadyPresent);

    let served = dir.path().join("served");
    let weights_path = releases.download(&release, &served).await.unwrap();
    assert_eq!(weights_path, served.join(release.hex()).join(RELEASE_WEIGHTS_FILE));
    assert_eq!(std::fs::read(&weights_path).unwrap(), weights);
    let folder = served.join(release.hex());
    assert_eq!(std::fs::read(folder.join(RELEASE_RECOVERY_FILE)).unwrap(), recovery_of(&weights));
    assert_eq!(names_in(&folder), [RELEASE_WEIGHTS_FILE, RELEASE_RECOVERY_FILE], "no temporary file is left");
}

#[tokio::test]
async fn a_file_missing_from_the_store_is_uploaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = registry(dir.path()).await;
    let releases = registry.releases();
    let release = local_release(&dir.path().join("built"), b"weights");
    let built = dir.path().join("built").join(release.hex());
    releases.upload(&release, &built).await.unwrap();

    store.delete(&releases.location(&release, RELEASE_RECOVERY_FILE)).await.unwrap();
    assert_eq!(releases.upload(&release, &built).await.unwrap(), ReleaseUpload::Uploaded);
    let stored = store.get(&releases.location(&release, RELEASE_RECOVERY_FILE)).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored.to_vec(), recovery_of(b"weights"));
}

#[tokio::test]
async fn local_weights_that_are_not_the_release_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = registry(dir.path()).await;
    let release = local_release(&dir.path().join("built"), b"weights");
    let built = dir.path().join("built").join(release.hex());
    std::fs::write(built.join(RELEASE_WEIGHTS_FILE), b"weights, damaged").unwrap();

    let err = registry.releases().upload(&release, &built).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&built.join(RELEASE_WEIGHTS_FILE).display().to_string()), "{err}");
    let index = registry.releases().location(&release, RELEASE_INDEX_FILE);
    assert!(matches!(store.head(&index).await, Err(adapterci_registry::object_store::Error::NotFound { .. })));
}

#[tokio::test]
async fn a_release_the_store_does_not_have_is_not_found_naming_it_and_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _store) = registry(dir.path()).await;
    let release = Digest::of(b"never uploaded");
    let err = registry.releases().download(&release, &dir.path().join("served")).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&release.to_string()), "{message}");
    assert!(message.contains(&format!("releases/{}/release.json", release.hex())), "{message}");
}

#[tokio::test]
async fn corrupt_weights_in_the_store_are_refused_and_nothing_takes_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = registry(dir.path()).await;
    let releases = registry.releases();
    let release = local_release(&dir.path().join("built"), b"weights that will rot");
    releases.upload(&release, &dir.path().join("built").join(release.hex())).await.unwrap();
    let location = releases.location(&release, RELEASE_WEIGHTS_FILE);
    store.put(&location, PutPayload::from(b"weights that did rot!".to_vec())).await.unwrap();

    let served = dir.path().join("served");
    let err = releases.download(&release, &served).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&release.to_string()) && message.contains(&location.to_string()), "{message}");
    // the recovery adapter was fine and is kept; the weights never got their name, no partial file is left
    assert_eq!(names_in(&served.join(release.hex())), [RELEASE_RECOVERY_FILE]);
}

#[tokio::test]
async fn a_file_list_naming_another_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, store) = registry(dir.path()).await;
    let releases = registry.releases();
    let other = local_release(&dir.path().join("built"), b"other release");
    releases.upload(&other, &dir.path().join("built").join(other.hex())).await.unwrap();
    // the other release's list copied under this release's key
    let release = Digest::of(b"this release");
    let list = store.get(&releases.location(&other, RELEASE_INDEX_FILE)).await.unwrap().bytes().await.unwrap();
    store.put(&releases.location(&release, RELEASE_INDEX_FILE), PutPayload::from(list)).await.unwrap();

    let err = releases.download(&release, &dir.path().join("served")).await.unwrap_err();
    assert!(matches!(err, RegistryError::InvalidManifest { .. }), "{err}");
    assert!(err.to_string().contains(&format!("it describes release {other}")), "{err}");
}

#[tokio::test]
async fn upload_all_sends_the_releases_built_before_and_skips_other_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _store) = registry(dir.path()).await;
    let built = dir.path().join("built");
    let first = local_release(&built, b"first");
    let second = local_release(&built, b"second");
    std::fs::create_dir_all(built.join(".build/models")).unwrap();
    std::fs::create_dir_all(built.join("not-a-digest")).unwrap();
    let releases = registry.releases();
    releases.upload(&first, &built.join(first.hex())).await.unwrap();

    let none = std::collections::BTreeSet::new();
    let mut results: Vec<(Digest, ReleaseUpload)> = releases
        .upload_all(&built, &none)
        .await
        .into_iter()
        .map(|(digest, result)| (digest, result.unwrap()))
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![(first.clone(), ReleaseUpload::AlreadyPresent), (second.clone(), ReleaseUpload::Uploaded)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results, expected);
    assert!(releases.upload_all(&dir.path().join("no-such-folder"), &none).await.is_empty());
    // the releases a process already knows are in the store are not looked at again
    let known = std::collections::BTreeSet::from([first.clone()]);
    let again: Vec<Digest> = releases.upload_all(&built, &known).await.into_iter().map(|(digest, _)| digest).collect();
    assert_eq!(again, vec![second.clone()]);
}

#[tokio::test]
async fn garbage_collection_never_touches_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _store) = registry(dir.path()).await;
    let registry = registry.with_prefix("registry").unwrap();
    let releases = registry.releases();
    let release = local_release(&dir.path().join("built"), b"a release no version references");
    releases.upload(&release, &dir.path().join("built").join(release.hex())).await.unwrap();
    assert!(releases.location(&release, RELEASE_WEIGHTS_FILE).to_string().starts_with("registry/releases/"));

    let report = registry.collect_garbage(Duration::zero()).await.unwrap();
    assert!(report.deleted.is_empty(), "{report:?}");
    let weights = releases.download(&release, &dir.path().join("served")).await.unwrap();
    assert_eq!(std::fs::read(weights).unwrap(), b"a release no version references");
}
