//! [`Download`]: a successful response whose body is read piece by piece, for files too large to hold in memory
//! (the merged export).

use bytes::Bytes;
use reqwest::{Method, Url};

use super::innermost_reason;
use crate::error::ApiError;

/// A response body still to be read. Dropping it unread abandons the body (its connection is not reused).
#[derive(Debug)]
pub struct Download {
    method: Method,
    url: Url,
    response: reqwest::Response,
    /// Read before the body: reqwest's own answer is what is left of the body, so it shrinks as pieces are read.
    content_length: Option<u64>,
}

impl Download {
    pub(super) fn new(method: Method, url: Url, response: reqwest::Response) -> Download {
        let content_length = response.content_length();
        Download { method, url, response, content_length }
    }

    /// The length the server announced (`Content-Length`), when it did; the same before and after reading.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The next piece of the body, `None` after the last one. A connection that breaks, or ends before the
    /// announced length, is [`ApiError::Transport`].
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        self.response.chunk().await.map_err(|err| ApiError::Transport {
            method: self.method.to_string(),
            url: self.url.to_string(),
            reason: innermost_reason(&err),
        })
    }
}
