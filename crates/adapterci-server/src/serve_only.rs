//! Serving replicas (`adapterd --serve-only`): the routes such an adapterd refuses, and the base releases that
//! replicas fetch from the registry's store, which the adapterd that builds releases uploads there.
//!
//! A serve-only adapterd answers reads (every `GET`) and inference (`POST` completions); every other request would
//! change state that belongs to the adapterd running the controller (pipelines, triggers, webhooks, datasets,
//! channel moves, garbage collection, cancels, imports) and is refused with 409 naming the flag.

use std::path::{Path, PathBuf};

use adapterci_api::{ErrorCode, routes};
use adapterci_core::Digest;
use adapterci_core::base_release::ReleaseSource;
use adapterci_core::ports::RegistryError;
use adapterci_registry::{ReleaseStore, ReleaseUpload};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{AppError, AppState};

/// The `POST` routes a serve-only adapterd answers: inference, which changes nothing.
const INFERENCE_ROUTES: [&str; 2] = [routes::COMPLETIONS, routes::CHAT_COMPLETIONS];

/// What a serve-only adapterd answers to a request that would change state.
pub fn refusal(method: &Method, path: &str) -> AppError {
    AppError::new(
        ErrorCode::Conflict,
        format!(
            "this adapterd serves only (--serve-only): {method} {path} changes state; send it to the adapterd that \
             runs the controller"
        ),
    )
}

/// Whether a serve-only adapterd answers `method` on the route `route` (its template, as `/api/v1/runs/{id}`).
pub fn answers(method: &Method, route: &str) -> bool {
    method == Method::GET || method == Method::HEAD || (method == Method::POST && INFERENCE_ROUTES.contains(&route))
}

/// The route layer that refuses state-changing requests when adapterd serves only; it runs after routing, so an
/// unknown path is still a 404 and a wrong method still a 405.
pub async fn refuse_state_changes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.serve_only {
        let route = request.extensions().get::<MatchedPath>().map(|matched| matched.as_str().to_string());
        let route = route.unwrap_or_else(|| request.uri().path().to_string());
        if !answers(request.method(), &route) {
            return refusal(request.method(), request.uri().path()).into_response();
        }
    }
    next.run(request).await
}

/// The registry's release store as the worker's release source: a release missing from the releases folder is
/// fetched from `releases/<hex>/` of the registry's store, its files checked against their digests.
#[derive(Debug)]
pub struct RegistryReleaseSource(pub ReleaseStore);

#[async_trait::async_trait]
impl ReleaseSource for RegistryReleaseSource {
    async fn fetch_release(&self, release: &Digest, releases_dir: &Path) -> Result<PathBuf, RegistryError> {
        self.0.download(release, releases_dir).await
    }
}

/// Uploads every release of `releases_dir` that the registry's store lacks (built before releases were uploaded,
/// or whose upload after its build failed); what is already there costs a file list read and a size check each.
/// `known` holds the releases this process found in the store or uploaded: they are not looked at again (each
/// look is a read and a HEAD per file, every watcher pass).
pub async fn upload_local_releases(
    releases: &ReleaseStore,
    releases_dir: &Path,
    known: &mut std::collections::BTreeSet<Digest>,
) {
    for (release, result) in releases.upload_all(releases_dir, known).await {
        match result {
            Ok(ReleaseUpload::Uploaded) => {
                tracing::info!(%release, "base release uploaded for serving replicas");
                known.insert(release);
            }
            Ok(ReleaseUpload::AlreadyPresent) => {
                known.insert(release);
            }
            // upload_all logged it; the next pass tries again
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_inference_are_answered_and_everything_else_refused() {
        let check = |method: Method, route: &str, expect: bool| {
            assert_eq!(answers(&method, route), expect, "{method} {route}");
        };
        check(Method::GET, routes::PIPELINES, true);
        check(Method::GET, routes::RUN_LOGS, true);
        check(Method::GET, routes::MODELS, true);
        check(Method::GET, routes::HEALTHZ, true);
        check(Method::GET, routes::READYZ, true);
        check(Method::POST, routes::COMPLETIONS, true);
        check(Method::POST, routes::CHAT_COMPLETIONS, true);
        check(Method::POST, routes::PIPELINES, false);
        check(Method::POST, routes::PIPELINE_TRIGGER, false);
        check(Method::POST, routes::RUN_CANCEL, false);
        check(Method::POST, routes::WEBHOOK, false);
        check(Method::POST, routes::ADAPTER_CHANNEL_PROMOTE, false);
        check(Method::POST, routes::ADAPTER_CHANNEL_ROLLBACK, false);
        check(Method::POST, routes::ADAPTER_PEFT_IMPORT, false);
        check(Method::POST, routes::REGISTRY_GC, false);
        check(Method::PUT, routes::DATASET, false);
    }

    #[test]
    fn the_refusal_names_the_flag_the_request_and_where_to_send_it() {
        let refused = refusal(&Method::POST, "/api/v1/registry/gc");
        assert_eq!(refused.code, ErrorCode::Conflict);
        assert_eq!(
            refused.message,
            "this adapterd serves only (--serve-only): POST /api/v1/registry/gc changes state; send it to the \
             adapterd that runs the controller"
        );
    }
}
