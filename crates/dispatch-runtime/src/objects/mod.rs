//! The artifact store: where a cluster keeps what runs leave behind, so any
//! server can hand it back whoever ran the run. Behind the `object_store`
//! crate, by URL:
//!
//! | URL | store |
//! | --- | --- |
//! | `file:///shared/dir` | a directory (a shared mount); it must exist |
//! | `s3://bucket/prefix` | S3 or an S3-compatible server: credentials, region and endpoint from the standard `AWS_*` variables (`AWS_ENDPOINT_URL` for another server; an `http://` endpoint is allowed as it is) |
//! | `gs://bucket/prefix` | Google Cloud Storage (`GOOGLE_*` / `SERVICE_ACCOUNT` variables) |
//! | `az://container/prefix` | Azure Blob Storage (`AZURE_*` variables) |
//!
//! Under the URL's prefix: `artifacts/<sha256>` (content-addressed; the
//! bytes are checked against the digest on every download), `logs/<sha256>`
//! (finished runs' log archives, content-addressed and checked the same way,
//! see [`logs`]) and `state/<parcel>/<path>` (parcels' `DISPATCH_STATE_DIR`,
//! see [`state`]).
//! Without a URL, a server or worker on PostgreSQL keeps them in the
//! cluster's database ([`Objects::database`], see [`db`]): every server
//! reads what any worker wrote, with nothing else to set up, up to 2 GiB an
//! object. On SQLite (one machine) a process uses its own state directory
//! (`.dispatch/`): `artifacts/<sha256>` there is where the local runtime
//! always kept them.

pub mod calls;
pub mod db;
pub mod logs;
mod parcels;
pub mod state;
mod verify;

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload};
use tokio::io::AsyncReadExt;

pub use verify::Verified;

/// Why the artifact store failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error(
        "`{url}` is not an artifact store URL: {reason} (hint: file:///shared/dir, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix)"
    )]
    BadUrl { url: String, reason: String },
    #[error("{what} {key} in {url}")]
    Store {
        what: &'static str,
        key: String,
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{key} is not in {url}")]
    NotFound { key: String, url: String },
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {expected} in {url} does not match its digest (its bytes hash to {got})")]
    Corrupt {
        /// `artifact` or `log archive`.
        what: &'static str,
        expected: String,
        got: String,
        url: String,
    },
}

pub type ObjectsResult<T> = Result<T, ObjectsError>;

/// One artifact store, by URL.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Every key lives under this.
    prefix: Path,
    /// As the user gave it (for messages).
    url: String,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("url", &self.url).finish()
    }
}

/// Bytes read and written at once when a file is uploaded (multipart
/// uploads take parts of this size).
const CHUNK: usize = 8 * 1024 * 1024;

impl Objects {
    /// The store a URL names. Nothing is contacted yet: [`Objects::probe`]
    /// checks it can be written.
    pub fn open(url: &str) -> ObjectsResult<Objects> {
        let bad = |reason: String| ObjectsError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::Local => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path".into()))?;
                if !dir.is_dir() {
                    return Err(bad(format!("{} is not a directory", dir.display())));
                }
                return Objects::local(&dir).map(|o| Objects {
                    url: url.to_string(),
                    ..o
                });
            }
            ObjectStoreScheme::AmazonS3 => {
                install_tls();
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_retry(retry());
                // `AWS_ENDPOINT_URL` (the AWS CLI's name) as well as `AWS_ENDPOINT`;
                // a plain-HTTP endpoint is a local server: allowed as given.
                let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
                    .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                    .or_else(|_| std::env::var("AWS_ENDPOINT"))
                    .ok()
                    .filter(|e| !e.is_empty());
                if let Some(endpoint) = endpoint {
                    b = b
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_endpoint(endpoint);
                }
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                install_tls();
                let b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry());
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                install_tls();
                let b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_retry(retry());
                Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
            }
            other => return Err(bad(format!("{other:?} is not supported"))),
        };
        Ok(Objects {
            store,
            prefix,
            url: url.to_string(),
        })
    }

    /// A local directory (created when missing): the default, a process's
    /// own `.dispatch/`.
    pub fn local(dir: &FsPath) -> ObjectsResult<Objects> {
        std::fs::create_dir_all(dir).map_err(|source| ObjectsError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| ObjectsError::BadUrl {
                url: dir.display().to_string(),
                reason: e.to_string(),
            })?
            .with_automatic_cleanup(true);
        Ok(Objects {
            store: Arc::new(fs),
            prefix: Path::default(),
            url: format!("file://{}", dir.display()),
        })
    }

    /// The objects kept in the cluster's database (see [`db`]); `name` is
    /// how messages call it (`postgresql (the cluster's database)`).
    pub fn database(store: Arc<dyn dispatch_store::BlobStore>, name: &str) -> Objects {
        Objects {
            store: Arc::new(db::DbObjects::new(store)),
            prefix: Path::default(),
            url: name.to_string(),
        }
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key<'a>(&self, parts: impl IntoIterator<Item = &'a str>) -> Path {
        let mut key = self.prefix.clone();
        for part in parts {
            key = key.join(part);
        }
        key
    }

    fn failed(
        &self,
        what: &'static str,
        key: &Path,
    ) -> impl FnOnce(object_store::Error) -> ObjectsError {
        let (key, url) = (key.to_string(), self.url.clone());
        move |source| match source {
            object_store::Error::NotFound { .. } => ObjectsError::NotFound { key, url },
            source => ObjectsError::Store {
                what,
                key,
                url,
                source: Box::new(source),
            },
        }
    }

    /// Writes and deletes an object: a store this process cannot write is
    /// refused at startup, not at the first run's end.
    pub async fn probe(&self) -> ObjectsResult<()> {
        let name = format!("probe-{}-{}", std::process::id(), fastrand::u64(..));
        let key = self.key([".dispatch-probe", name.as_str()]);
        self.store
            .put(&key, PutPayload::from_static(b"probe"))
            .await
            .map_err(self.failed("cannot write", &key))?;
        self.store
            .delete(&key)
            .await
            .map_err(self.failed("cannot delete", &key))
    }

    fn artifact_key(&self, sha256: &str) -> Path {
        self.key(["artifacts", sha256])
    }

    /// Stores the file at `path` as artifact `sha256` (its digest, computed
    /// by the caller), unless the store has it already. `true` when it was
    /// uploaded.
    pub async fn put_artifact(&self, sha256: &str, path: &FsPath) -> ObjectsResult<bool> {
        let key = self.artifact_key(sha256);
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        if let Ok(meta) = self.store.head(&key).await
            && Some(meta.size) == size
        {
            return Ok(false);
        }
        self.put_file(&key, path).await?;
        Ok(true)
    }

    /// Uploads a file: one request when small, a multipart upload of
    /// [`CHUNK`]-sized parts when larger. Readers never see a partial object.
    pub(crate) async fn put_file(
        &self,
        key: &Path,
        path: &FsPath,
    ) -> ObjectsResult<object_store::PutResult> {
        let io = |source| ObjectsError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut first = read_chunk(&mut file).await.map_err(io)?;
        if first.len() < CHUNK {
            first.shrink_to_fit();
            return self
                .store
                .put(key, PutPayload::from(first))
                .await
                .map_err(self.failed("cannot write", key));
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(self.failed("cannot start an upload of", key))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, CHUNK);
        writer.put(Bytes::from(first));
        loop {
            let chunk = read_chunk(&mut file).await.map_err(io)?;
            if chunk.is_empty() {
                break;
            }
            writer
                .wait_for_capacity(2)
                .await
                .map_err(self.failed("cannot write", key))?;
            writer.put(Bytes::from(chunk));
        }
        writer
            .finish()
            .await
            .map_err(self.failed("cannot write", key))
    }

    /// Artifact `sha256`: its size and its bytes, checked against the
    /// digest as they stream (the stream ends in [`ObjectsError::Corrupt`]
    /// when they do not match). `NotFound` when the store does not have it.
    pub async fn get_artifact(&self, sha256: &str) -> ObjectsResult<(u64, Verified)> {
        self.get_verified(self.artifact_key(sha256), sha256, "artifact")
            .await
    }

    /// The size of artifact `sha256` in the store; `None` when it is not there.
    pub async fn artifact_size(&self, sha256: &str) -> ObjectsResult<Option<u64>> {
        let key = self.artifact_key(sha256);
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("cannot read", &key)(e)),
        }
    }

    /// Reads artifact `sha256` whole, checking it against its digest;
    /// returns its size (`Corrupt` when it does not match). What a `HEAD`
    /// of a download answers on, so that it never says 200 of a bad copy.
    pub async fn verify_artifact(&self, sha256: &str) -> ObjectsResult<u64> {
        use futures_util::StreamExt;
        let (_, mut stream) = self.get_artifact(sha256).await?;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            size += chunk?.len() as u64;
        }
        Ok(size)
    }

    /// Removes artifact `sha256` (nothing when the store does not have it).
    pub async fn delete_artifact(&self, sha256: &str) -> ObjectsResult<()> {
        self.delete(&self.artifact_key(sha256)).await
    }

    pub(crate) async fn delete(&self, key: &Path) -> ObjectsResult<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("cannot delete", key)(e)),
        }
    }

    /// The object at `key`, named by `sha256`, checked as it streams.
    pub(crate) async fn get_verified(
        &self,
        key: Path,
        sha256: &str,
        what: &'static str,
    ) -> ObjectsResult<(u64, Verified)> {
        let got = self
            .store
            .get(&key)
            .await
            .map_err(self.failed("cannot read", &key))?;
        let size = got.meta.size;
        let inner: BoxStream<'static, object_store::Result<Bytes>> = got.into_stream();
        Ok((size, Verified::new(inner, what, sha256, &self.url)))
    }

    /// Artifact `sha256` into the file `dest` (written beside it, checked,
    /// then renamed into place: a bad copy never lands).
    pub async fn download_artifact(&self, sha256: &str, dest: &FsPath) -> ObjectsResult<u64> {
        let (_, stream) = self.get_artifact(sha256).await?;
        download(stream, dest).await
    }
}

/// A verified stream into the file `dest` (written beside it, then renamed
/// into place once the whole stream checked out).
pub(crate) async fn download(mut stream: Verified, dest: &FsPath) -> ObjectsResult<u64> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let io = |source| ObjectsError::Io {
        path: dest.display().to_string(),
        source,
    };
    let tmp = dest.with_file_name(format!(
        ".{}.{}.part",
        dest.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let mut size = 0u64;
    let result = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        tokio::fs::rename(&tmp, dest).await.map_err(io)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|()| size)
}

/// The error and its causes on one line (`a: b: c`).
pub use dispatch_core::error_chain as chain;

async fn read_chunk(file: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK);
    while buf.len() < CHUNK {
        let n = (&mut *file)
            .take((CHUNK - buf.len()) as u64)
            .read_to_end(&mut buf)
            .await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf)
}

/// Requests that fail for a passing reason are tried again, for at most
/// 30 s in all (a store that is down is reported, not waited on for minutes).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 5,
        retry_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    }
}

/// HTTPS to cloud stores goes through rustls with ring, as the rest of
/// the workspace: installed once as the process's provider. object_store
/// builds its `reqwest` client (the workspace's one `reqwest`) from its own
/// options, with reqwest's platform verifier (the system's roots).
fn install_tls() {
    dispatch_http::install_ring();
}

#[cfg(test)]
mod db_tests;
#[cfg(test)]
mod tests;
