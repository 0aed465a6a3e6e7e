//! `ObjectStoreDatasetSource` on in-memory and local-directory stores: stat, read, write, etags and the
//! refusal of locations that could escape the store.

use adapterci_core::ports::{DatasetSource, SourceError};
use adapterci_registry::{ObjectStoreDatasetSource, open_object_store};
use bytes::Bytes;

/// Each source, with what keeps its directory alive.
fn sources() -> Vec<(&'static str, ObjectStoreDatasetSource, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_str().expect("a UTF-8 temporary path");
    let local = ObjectStoreDatasetSource::new(open_object_store(path).expect("open the directory"));
    let memory = ObjectStoreDatasetSource::new(open_object_store("memory://").expect("open memory"));
    vec![("memory", memory, None), ("local", local, Some(dir))]
}

#[tokio::test]
async fn missing_keys_stat_as_none_and_read_as_not_found() {
    for (kind, source, _dir) in sources() {
        assert_eq!(source.stat("datasets/none.jsonl").await.unwrap(), None, "{kind}");
        match source.read("datasets/none.jsonl").await {
            Err(SourceError::NotFound { location }) => assert_eq!(location, "datasets/none.jsonl", "{kind}"),
            other => panic!("{kind}: expected not found, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn write_then_stat_then_read_round_trips() {
    for (kind, source, _dir) in sources() {
        let bytes = Bytes::from_static(b"{\"prompt\":\"a\",\"completion\":\"b\"}\n");
        source.write("datasets/demo/train.jsonl", bytes.clone()).await.unwrap();
        let stat = source.stat("datasets/demo/train.jsonl").await.unwrap().expect("written");
        assert_eq!(stat.size, bytes.len() as u64, "{kind}");
        assert!(stat.etag.is_some(), "{kind}: both stores give etags");
        assert_eq!(source.read("datasets/demo/train.jsonl").await.unwrap(), bytes, "{kind}");
        assert_eq!(source.stat("datasets/demo").await.unwrap(), None, "{kind}: a directory is not an object");
    }
}

#[tokio::test]
async fn the_etag_changes_when_the_content_changes() {
    for (kind, source, _dir) in sources() {
        source.write("d.jsonl", Bytes::from_static(b"first\n")).await.unwrap();
        let first = source.stat("d.jsonl").await.unwrap().expect("written");
        // Same size on purpose: the etag must not be derived from the size alone.
        source.write("d.jsonl", Bytes::from_static(b"other\n")).await.unwrap();
        let second = source.stat("d.jsonl").await.unwrap().expect("written");
        assert_ne!(first.etag, second.etag, "{kind}");
        assert_eq!(source.read("d.jsonl").await.unwrap(), Bytes::from_static(b"other\n"), "{kind}");
    }
}

#[tokio::test]
async fn a_prefix_keeps_keys_apart() {
    let store = open_object_store("memory://").unwrap();
    let outer = ObjectStoreDatasetSource::new(store.clone());
    let inner = ObjectStoreDatasetSource::new(store).with_prefix("team-a/data").unwrap();
    inner.write("train.jsonl", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(outer.read("team-a/data/train.jsonl").await.unwrap(), Bytes::from_static(b"x"));
    assert_eq!(inner.stat("team-a/data/train.jsonl").await.unwrap(), None);
    let err = ObjectStoreDatasetSource::new(open_object_store("memory://").unwrap()).with_prefix("../up").unwrap_err();
    assert!(matches!(err, SourceError::InvalidLocation { .. }), "{err}");
}

#[tokio::test]
async fn invalid_locations_are_refused_with_the_reason_by_every_operation() {
    let cases = [
        ("", "must not be empty"),
        ("/etc/passwd", "no leading '/'"),
        ("../outside.jsonl", "'..' segments"),
        ("datasets/../../outside.jsonl", "'..' segments"),
        ("datasets//train.jsonl", "empty segments"),
        ("datasets/", "empty segments"),
        ("datasets\\train.jsonl", "backslashes"),
        ("datasets/train\u{0}.jsonl", "control characters"),
        ("datasets/./train.jsonl", "'.' segments"),
    ];
    for (kind, source, _dir) in sources() {
        for (location, reason) in cases {
            let results = [
                source.stat(location).await.map(|_| ()),
                source.read(location).await.map(|_| ()),
                source.write(location, Bytes::from_static(b"x")).await,
            ];
            for result in results {
                match result {
                    Err(err @ SourceError::InvalidLocation { .. }) => {
                        let text = err.to_string();
                        assert!(text.contains(reason), "{kind} {location:?}: {text}");
                        assert!(
                            text.contains(&format!("{location:?}")),
                            "{kind}: the error names the location: {text}"
                        );
                    }
                    other => panic!("{kind} {location:?}: expected a refusal, got {other:?}"),
                }
            }
        }
    }
}

#[tokio::test]
async fn nothing_escapes_a_local_directory() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("root");
    let source = ObjectStoreDatasetSource::new(open_object_store(root.to_str().unwrap()).unwrap());
    assert!(source.write("../escaped.txt", Bytes::from_static(b"x")).await.is_err());
    assert!(!parent.path().join("escaped.txt").exists());
    source.write("inside/ok.txt", Bytes::from_static(b"x")).await.unwrap();
    assert!(root.join("inside/ok.txt").exists());
}
