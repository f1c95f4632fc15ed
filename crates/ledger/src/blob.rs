//! Object storage for what must live outside the ledger: session-recording chunks (named by
//! their SHA-256) and mirrored checkpoints (a second place a truncated ledger cannot follow).
//! A folder or an S3-compatible bucket, through the `object_store` crate.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};

use crate::chain::to_hex;
use crate::error::LedgerError;

/// A folder or an S3-compatible bucket, behind `object_store`.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// For messages: `file:///…` or `s3://bucket/prefix`.
    name: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

fn store_err(name: &str, detail: impl std::fmt::Display) -> LedgerError {
    LedgerError::Recording {
        store: name.to_string(),
        detail: detail.to_string(),
    }
}

/// How to reach an S3-compatible bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
}

impl BlobStore {
    /// Recordings in a local folder (created if missing).
    pub fn local(folder: &std::path::Path) -> Result<BlobStore, LedgerError> {
        let name = format!("file://{}", folder.display());
        std::fs::create_dir_all(folder).map_err(|e| {
            store_err(
                &name,
                format!("cannot create the recordings folder: {e}; set [recordings] path"),
            )
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
            .map_err(|e| store_err(&name, e))?;
        Ok(BlobStore {
            store: Arc::new(store),
            prefix: String::new(),
            name,
        })
    }

    /// Recordings in an S3-compatible bucket.
    pub fn s3(opts: &S3Options) -> Result<BlobStore, LedgerError> {
        let prefix = opts.prefix.trim_matches('/').to_string();
        let name = format!("s3://{}/{prefix}", opts.bucket);
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&opts.bucket)
            .with_region(&opts.region)
            .with_access_key_id(&opts.access_key_id)
            .with_secret_access_key(&opts.secret_access_key)
            .with_allow_http(opts.allow_http);
        if let Some(endpoint) = &opts.endpoint {
            // Path-style requests (http://host/bucket/key): what MinIO and most others serve.
            b = b
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| store_err(&name, e))?;
        Ok(BlobStore {
            store: Arc::new(store),
            prefix,
            name,
        })
    }

    /// The store's name for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path_of(&self, hash: &str) -> Result<ObjectPath, LedgerError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(store_err(
                &self.name,
                format!("{hash:?} is not a chunk hash"),
            ));
        }
        let key = format!("chunks/{}/{hash}", &hash[..2]);
        Ok(if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        })
    }

    /// Stores a chunk under its hash; returns the hash.
    pub async fn put(&self, chunk: Vec<u8>) -> Result<String, LedgerError> {
        let hash = to_hex(&Sha256::digest(&chunk));
        let path = self.path_of(&hash)?;
        self.store
            .put(&path, Bytes::from(chunk).into())
            .await
            .map_err(|e| store_err(&self.name, format!("storing chunk {hash}: {e}")))?;
        Ok(hash)
    }

    /// Fetches the chunk named `hash` and checks that its bytes still hash to it.
    pub async fn get(&self, hash: &str) -> Result<Vec<u8>, LedgerError> {
        let path = self.path_of(hash)?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| store_err(&self.name, format!("fetching chunk {hash}: {e}")))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| store_err(&self.name, format!("reading chunk {hash}: {e}")))?;
        let actual = to_hex(&Sha256::digest(&bytes));
        if actual != hash {
            return Err(store_err(
                &self.name,
                format!(
                    "chunk {hash} was altered: its bytes hash to {actual}; the ledger's hash is \
                     the evidence, the stored chunk is not"
                ),
            ));
        }
        Ok(bytes.to_vec())
    }

    /// Deletes a chunk (retention). A chunk already gone is not an error.
    pub async fn delete(&self, hash: &str) -> Result<(), LedgerError> {
        let path = self.path_of(hash)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(&self.name, format!("deleting chunk {hash}: {e}"))),
        }
    }
}

impl BlobStore {
    fn named(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Stores `bytes` under `name` (below the prefix), replacing what was there.
    pub async fn put_named(&self, name: &str, bytes: Vec<u8>) -> Result<(), LedgerError> {
        self.store
            .put(&self.named(name), Bytes::from(bytes).into())
            .await
            .map(drop)
            .map_err(|e| store_err(&self.name, format!("storing {name}: {e}")))
    }

    /// The object `name`, or `None` if there is none.
    pub async fn get_named(&self, name: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        match self.store.get(&self.named(name)).await {
            Ok(got) => got
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| store_err(&self.name, format!("reading {name}: {e}"))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_err(&self.name, format!("fetching {name}: {e}"))),
        }
    }
}

/// Runs `fut` to completion from blocking code (the ledger's threads, the CLI): on a small
/// runtime of its own, on another thread if this one drives an async runtime already.
/// `Err` only if no runtime can be started (the process is out of threads or descriptors).
pub fn block_on<T: Send>(
    fut: impl std::future::Future<Output = T> + Send,
) -> Result<T, LedgerError> {
    let run = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(fut))
    };
    let out = if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| match s.spawn(run).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    } else {
        run()
    };
    out.map_err(|e| store_err("(runtime)", format!("cannot start a runtime: {e}")))
}

/// The object a mirror bucket keeps the latest checkpoint in; each one is also kept as
/// `checkpoints/<tree size, 20 digits>`, never overwritten (for buckets with object lock).
pub const MIRROR_LATEST: &str = "checkpoint";

/// Writes a signed checkpoint to a mirror bucket: the history object first, then the latest.
pub fn mirror_checkpoint(store: &BlobStore, size: u64, note: &str) -> Result<(), LedgerError> {
    block_on(async {
        store
            .put_named(&format!("checkpoints/{size:020}"), note.as_bytes().to_vec())
            .await?;
        store
            .put_named(MIRROR_LATEST, note.as_bytes().to_vec())
            .await
    })?
}

/// The latest checkpoint note in a mirror bucket, if there is one.
pub fn mirrored_checkpoint(store: &BlobStore) -> Result<Option<String>, LedgerError> {
    let bytes = block_on(store.get_named(MIRROR_LATEST))??;
    bytes
        .map(|b| {
            String::from_utf8(b)
                .map_err(|_| store_err(&store.name, "the mirrored checkpoint is not UTF-8 text"))
        })
        .transpose()
}
