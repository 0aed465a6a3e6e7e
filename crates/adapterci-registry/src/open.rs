//! Opening an object store from a URL: `file:///abs/dir`, a plain directory path, `memory://`, or
//! `s3://bucket/prefix` configured from the standard AWS environment variables.
//!
//! The S3 path is exercised against SeaweedFS by a later end-to-end test; here it is only built, never contacted.

use std::path::Path as FsPath;
use std::sync::Arc;

use adapterci_core::ports::RegistryError;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;

use crate::location::parse_key;

/// The S3 endpoint, for S3-compatible stores such as SeaweedFS or MinIO (`http://127.0.0.1:8333`).
pub const ENV_AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
pub const ENV_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Defaults to `us-east-1`, which S3-compatible stores accept.
pub const ENV_AWS_REGION: &str = "AWS_REGION";
pub const ENV_AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// `true` permits plain HTTP; when unset, an `http://` endpoint permits it.
pub const ENV_AWS_ALLOW_HTTP: &str = "AWS_ALLOW_HTTP";

/// Further AWS settings passed through as they are, for credentials from Kubernetes (IRSA) or ECS.
const PASSED_THROUGH: [&str; 7] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

const DEFAULT_REGION: &str = "us-east-1";

/// Opens the store that `url` names, reading S3 settings from the process environment.
///
/// - `file:///abs/dir` or a path without a scheme (`./data`, `/var/lib/adapterci`): a local directory,
///   created if missing;
/// - `memory://`: a new, empty in-memory store;
/// - `s3://bucket` or `s3://bucket/prefix`: a bucket, with keys below `prefix`.
pub fn open_object_store(url: &str) -> Result<Arc<dyn ObjectStore>, RegistryError> {
    open_object_store_with_env(url, &|key| std::env::var(key).ok())
}

/// [`open_object_store`] with the environment given as a lookup, so that tests need not change the process's.
pub fn open_object_store_with_env(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn ObjectStore>, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidRequest { what: format!("object store url {url:?}"), reason };
    if url.is_empty() {
        return Err(invalid("must not be empty".to_string()));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return open_local_dir(FsPath::new(url));
    };
    match scheme {
        "file" => {
            let parsed = url::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
            let dir = parsed.to_file_path().map_err(|()| {
                invalid("a file url needs an absolute path and no host, as in file:///srv/adapterci".into())
            })?;
            open_local_dir(&dir)
        }
        "memory" if rest.is_empty() => Ok(Arc::new(InMemory::new())),
        "memory" => Err(invalid("memory:// takes no path".to_string())),
        "s3" => open_s3(url, env).map_err(invalid),
        other => Err(invalid(format!(
            "unsupported scheme {other:?} (expected file://, memory://, s3:// or a plain directory path)"
        ))),
    }
}

fn open_local_dir(dir: &FsPath) -> Result<Arc<dyn ObjectStore>, RegistryError> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|err| RegistryError::Backend(format!("create directory {shown}: {err}")))?;
    let store = LocalFileSystem::new_with_prefix(dir)
        .map_err(|err| RegistryError::Backend(format!("open directory {shown}: {err}")))?;
    Ok(Arc::new(store))
}

/// The bucket and prefix of an `s3://` URL, and the store; `Err` is the reason the URL is refused.
fn open_s3(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Arc<dyn ObjectStore>, String> {
    let parsed = url::Url::parse(url).map_err(|err| err.to_string())?;
    let bucket = parsed.host_str().filter(|bucket| !bucket.is_empty()).ok_or("the bucket name is missing")?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("an s3 url takes no query or fragment".to_string());
    }
    let prefix = parsed.path().trim_start_matches('/').trim_end_matches('/');
    let prefix = if prefix.is_empty() { None } else { Some(parse_key(prefix).map_err(|r| format!("prefix {r}"))?) };

    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    let region = env(ENV_AWS_REGION).or_else(|| env(ENV_AWS_DEFAULT_REGION)).unwrap_or_else(|| DEFAULT_REGION.into());
    builder = builder.with_region(region);
    if let Some(endpoint) = env(ENV_AWS_ENDPOINT_URL) {
        let plain_http = endpoint.starts_with("http://");
        builder = builder.with_endpoint(endpoint).with_allow_http(plain_http);
    }
    if let Some(allow) = env(ENV_AWS_ALLOW_HTTP) {
        builder = builder.with_allow_http(matches!(allow.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    }
    if let Some(key) = env(ENV_AWS_ACCESS_KEY_ID) {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = env(ENV_AWS_SECRET_ACCESS_KEY) {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(token) = env(ENV_AWS_SESSION_TOKEN) {
        builder = builder.with_token(token);
    }
    for name in PASSED_THROUGH {
        if let (Some(value), Ok(key)) = (env(name), name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()) {
            builder = builder.with_config(key, value);
        }
    }
    let store = builder.build().map_err(|err| err.to_string())?;
    Ok(match prefix {
        Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
        None => Arc::new(store),
    })
}
