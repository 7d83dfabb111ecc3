//! An artifact's bytes as they stream from the store, hashed on the way:
//! when the last chunk has passed and the digest is not the artifact's
//! name, the stream ends in an error instead of ending cleanly, so a reader
//! (an HTTP response, a download into a file) never takes a bad copy for a
//! good one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::ObjectsError;

/// The bytes of one artifact, checked against its digest.
pub struct Verified {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    /// `None` once the stream has ended.
    hasher: Option<Sha256>,
    /// What it is, for messages (`artifact`, `log archive`).
    what: &'static str,
    expected: String,
    url: String,
}

impl Verified {
    pub(super) fn new(
        inner: BoxStream<'static, object_store::Result<Bytes>>,
        what: &'static str,
        expected: &str,
        url: &str,
    ) -> Self {
        Verified {
            inner,
            hasher: Some(Sha256::new()),
            what,
            expected: expected.to_string(),
            url: url.to_string(),
        }
    }
}

impl Stream for Verified {
    type Item = Result<Bytes, ObjectsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(hasher) = this.hasher.as_mut() else {
            return Poll::Ready(None);
        };
        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(source))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(ObjectsError::Store {
                    what: "cannot read",
                    key: format!("{} {}", this.what, this.expected),
                    url: this.url.clone(),
                    source: Box::new(source),
                })))
            }
            Poll::Ready(None) => {
                let got = hex::encode(this.hasher.take().map(Sha256::finalize).unwrap_or_default());
                if got == this.expected {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(ObjectsError::Corrupt {
                        what: this.what,
                        expected: this.expected.clone(),
                        got,
                        url: this.url.clone(),
                    })))
                }
            }
        }
    }
}
