//! An artifact's bytes as they stream from the store, hashed on the way.
//! Each chunk is held back until the next one has arrived, and the last
//! one until the digest is checked: when the digest is not the artifact's
//! name, the stream ends in an error *instead of* its last chunk. A reader
//! that knows the length (an HTTP response with `Content-Length`, a
//! download into a file) therefore never receives the whole length of a
//! bad copy, and never takes it for a good one.

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
    /// The newest chunk, hashed, not passed on yet.
    held: Option<Bytes>,
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
            held: None,
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
        loop {
            let Some(hasher) = this.hasher.as_mut() else {
                // Ended: the last chunk, once the digest held.
                return Poll::Ready(this.held.take().map(Ok));
            };
            match this.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    hasher.update(&chunk);
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(source))) => {
                    this.hasher = None;
                    this.held = None;
                    return Poll::Ready(Some(Err(ObjectsError::Store {
                        what: "cannot read",
                        key: format!("{} {}", this.what, this.expected),
                        url: this.url.clone(),
                        source: Box::new(source),
                    })));
                }
                Poll::Ready(None) => {
                    let got =
                        hex::encode(this.hasher.take().map(Sha256::finalize).unwrap_or_default());
                    if got != this.expected {
                        // The last chunk is never passed on.
                        this.held = None;
                        return Poll::Ready(Some(Err(ObjectsError::Corrupt {
                            what: this.what,
                            expected: this.expected.clone(),
                            got,
                            url: this.url.clone(),
                        })));
                    }
                }
            }
        }
    }
}
