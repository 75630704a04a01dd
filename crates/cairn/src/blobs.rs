//! Blob storage for uploaded files: a directory under the data directory by default, or any
//! S3-compatible store, both through `object_store`. Every blob is encrypted before it leaves
//! the process, with its own random key (stored sealed by the data key in the document's row)
//! and the STREAM construction over XChaCha20-Poly1305 in 64 KiB segments, so files stream in
//! and out in bounded memory and any truncation, reordering or tampering fails to open.
//!
//! Format: `CAIRNBLOB1` (10 bytes), a 19-byte nonce prefix, then the segments, each the
//! ciphertext of up to 64 KiB plus a 16-byte tag; the last segment is marked as last.

use std::sync::Arc;

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, WriteMultipart};

use crate::config::{Config, StorageBackend};

const MAGIC: &[u8; 10] = b"CAIRNBLOB1";
const NONCE_PREFIX: usize = 19;
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;
/// Parts handed to the store (S3's minimum part size is 5 MiB).
const PART: usize = 8 * 1024 * 1024;
/// Parts in flight at once: bounds an upload's memory to about `PART × (this + 1)`.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("the blob is corrupt, truncated, or was encrypted with another key")]
    Corrupt,
    #[error("the blob is larger than {0} bytes")]
    TooLarge(u64),
    #[error("could not draw random bytes")]
    Random,
    #[error("blob storage is misconfigured: {0}")]
    Config(String),
}

/// Bytes as `object_store` streams them.
pub type ByteStream = futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>;

/// A local file with its size, read 1 MiB at a time; `None` when it does not exist.
/// `object_store`'s local reader hands out 8 KiB pieces, one blocking task each, which capped
/// backups near 70 MB/s.
pub async fn local_file_stream(
    path: &std::path::Path,
) -> std::io::Result<Option<(u64, ByteStream)>> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata().await?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(|r| {
        r.map_err(|e| object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        })
    });
    Ok(Some((size, stream.boxed())))
}

fn local_error(e: std::io::Error) -> BlobError {
    BlobError::Store(object_store::Error::Generic {
        store: "local",
        source: Box::new(e),
    })
}

/// A per-file key.
pub struct FileKey(pub [u8; 32]);

impl FileKey {
    pub fn generate() -> Result<Self, BlobError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|_| BlobError::Random)?;
        Ok(Self(k))
    }
}

impl Drop for FileKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A bucket reached with the endpoint, region and credentials of `storage.s3_*` (blobs, and
/// backups sent to S3).
pub fn s3_store(
    s: &crate::config::StorageConfig,
    bucket: &str,
) -> Result<object_store::aws::AmazonS3, object_store::Error> {
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&s.s3_region)
        .with_allow_http(s.s3_allow_http);
    if let Some(endpoint) = &s.s3_endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(id) = &s.s3_access_key_id {
        b = b.with_access_key_id(id);
    }
    if let Some(secret) = &s.s3_secret_access_key {
        b = b.with_secret_access_key(secret.expose());
    }
    b.build()
}

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Where blobs live, for logs and health (no credentials).
    pub describe: String,
    local: Option<std::path::PathBuf>,
}

impl BlobStore {
    pub fn from_config(config: &Config) -> Result<Self, BlobError> {
        let s = &config.storage;
        match s.backend {
            StorageBackend::Local => {
                let dir = s
                    .path
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("blobs"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| BlobError::Config(format!("{}: {e}", dir.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                Ok(Self {
                    store: Arc::new(fs),
                    describe: format!("local directory {}", dir.display()),
                    local: Some(dir),
                })
            }
            StorageBackend::S3 => {
                let bucket = s.s3_bucket.as_deref().ok_or_else(|| {
                    BlobError::Config(
                        "storage.s3_bucket is required with storage.backend = \"s3\"".into(),
                    )
                })?;
                Ok(Self {
                    local: None,
                    store: Arc::new(s3_store(s, bucket)?),
                    describe: format!(
                        "S3 bucket {bucket}{}",
                        s.s3_endpoint
                            .as_deref()
                            .map(|e| format!(" at {e}"))
                            .unwrap_or_default()
                    ),
                })
            }
        }
    }

    /// The directory of a local store.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// Start writing an encrypted blob under `key`.
    pub async fn writer(&self, key: &str, file_key: &FileKey) -> Result<BlobWriter, BlobError> {
        let mut nonce = [0u8; NONCE_PREFIX];
        getrandom::fill(&mut nonce).map_err(|_| BlobError::Random)?;
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&file_key.0));
        let upload = self.store.put_multipart(&StorePath::from(key)).await?;
        let mut upload = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&nonce);
        upload.write(&header);
        Ok(BlobWriter {
            upload,
            encryptor: Some(EncryptorBE32::from_aead(cipher, nonce.as_ref().into())),
            pending: Vec::with_capacity(SEGMENT),
            plaintext_bytes: 0,
        })
    }

    /// Read and decrypt a blob as a stream of plaintext pieces (a segment at a time), for
    /// sending a file out without holding it whole. A corrupt or truncated blob ends the
    /// stream with an error.
    pub async fn reader(
        &self,
        key: &str,
        file_key: &FileKey,
    ) -> Result<
        impl futures::Stream<Item = Result<bytes::Bytes, BlobError>> + Send + 'static,
        BlobError,
    > {
        let Some((_, inner)) = self.raw_get(key).await? else {
            return Err(BlobError::Store(object_store::Error::NotFound {
                path: key.to_owned(),
                source: "no such blob".into(),
            }));
        };
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&file_key.0));
        let state = Decrypting {
            inner,
            cipher: Some(cipher),
            decryptor: None,
            buf: Vec::new(),
            finished: false,
        };
        Ok(futures::stream::try_unfold(state, |mut st| async move {
            loop {
                if st.finished {
                    return Ok(None);
                }
                if let Some(piece) = st.next_segment(false)? {
                    return Ok(Some((bytes::Bytes::from(piece), st)));
                }
                match st.inner.next().await {
                    Some(chunk) => st.buf.extend_from_slice(&chunk?),
                    None => {
                        st.finished = true;
                        let last = st.next_segment(true)?.unwrap_or_default();
                        return Ok(Some((bytes::Bytes::from(last), st)));
                    }
                }
            }
        }))
    }

    /// Read and decrypt a whole blob, refusing one whose plaintext exceeds `max_bytes`.
    pub async fn read_all(
        &self,
        key: &str,
        file_key: &FileKey,
        max_bytes: u64,
    ) -> Result<Vec<u8>, BlobError> {
        let mut stream = Box::pin(self.reader(key, file_key).await?);
        let mut out = Vec::new();
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
            if out.len() as u64 > max_bytes {
                return Err(BlobError::TooLarge(max_bytes));
            }
        }
        Ok(out)
    }

    /// Remove a blob; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&StorePath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys under `prefix` with their last-modified time (for the orphan sweep).
    pub async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, BlobError> {
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&StorePath::from(prefix)));
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            out.push((meta.location.to_string(), meta.last_modified));
        }
        Ok(out)
    }

    /// A blob exactly as stored (still encrypted), with its size, as a stream of large
    /// pieces; `None` when there is no such blob. For backups, and under [`Self::reader`].
    pub async fn raw_get(&self, key: &str) -> Result<Option<(u64, ByteStream)>, BlobError> {
        let plain_key = std::path::Path::new(key)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if let Some(dir) = self.local.as_ref().filter(|_| plain_key) {
            return local_file_stream(&dir.join(key)).await.map_err(local_error);
        }
        match self.store.get(&StorePath::from(key)).await {
            Ok(r) => Ok(Some((r.meta.size, r.into_stream()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Start storing a blob's bytes as they are (already encrypted): for restores.
    pub async fn raw_put(&self, key: &str) -> Result<WriteMultipart, BlobError> {
        let upload = self.store.put_multipart(&StorePath::from(key)).await?;
        Ok(WriteMultipart::new_with_chunk_size(upload, PART))
    }

    /// Whether the store answers (one metadata request).
    pub async fn ping(&self) -> Result<(), BlobError> {
        self.exists("health/probe").await.map(|_| ())
    }

    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.store.head(&StorePath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The state of a streamed decryption.
struct Decrypting {
    inner: ByteStream,
    cipher: Option<XChaCha20Poly1305>,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    buf: Vec<u8>,
    finished: bool,
}

impl Decrypting {
    /// The next plaintext segment if the buffer holds one that is surely not the last (or, at
    /// the end, the last one).
    fn next_segment(&mut self, at_end: bool) -> Result<Option<Vec<u8>>, BlobError> {
        let header = MAGIC.len() + NONCE_PREFIX;
        if self.decryptor.is_none() {
            if self.buf.len() < header {
                return if at_end {
                    Err(BlobError::Corrupt)
                } else {
                    Ok(None)
                };
            }
            if &self.buf[..MAGIC.len()] != MAGIC {
                return Err(BlobError::Corrupt);
            }
            let cipher = self.cipher.take().ok_or(BlobError::Corrupt)?;
            self.decryptor = Some(DecryptorBE32::from_aead(
                cipher,
                self.buf[MAGIC.len()..header].into(),
            ));
            self.buf.drain(..header);
        }
        if at_end {
            let d = self.decryptor.take().ok_or(BlobError::Corrupt)?;
            let plain = d
                .decrypt_last(&self.buf[..])
                .map_err(|_| BlobError::Corrupt)?;
            self.buf.clear();
            return Ok(Some(plain));
        }
        // Keep at least one whole segment back: only the end tells which one is last.
        if self.buf.len() <= SEGMENT + TAG {
            return Ok(None);
        }
        let d = self.decryptor.as_mut().ok_or(BlobError::Corrupt)?;
        let plain = d
            .decrypt_next(&self.buf[..SEGMENT + TAG])
            .map_err(|_| BlobError::Corrupt)?;
        self.buf.drain(..SEGMENT + TAG);
        Ok(Some(plain))
    }
}

/// An encrypted blob being written. Drop without [`finish`](Self::finish) and nothing is
/// stored (call [`abort`](Self::abort) to release the store's partial upload at once).
pub struct BlobWriter {
    upload: WriteMultipart,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
    plaintext_bytes: u64,
}

impl BlobWriter {
    /// Encrypt and send `data`, waiting when too many parts are in flight.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), BlobError> {
        self.plaintext_bytes += data.len() as u64;
        while !data.is_empty() {
            // A full pending segment is sealed only once more data follows it (the last
            // segment is sealed differently, in `finish`).
            if self.pending.len() == SEGMENT {
                let e = self.encryptor.as_mut().ok_or(BlobError::Corrupt)?;
                let sealed = e
                    .encrypt_next(&self.pending[..])
                    .map_err(|_| BlobError::Corrupt)?;
                self.upload.write(&sealed);
                self.pending.clear();
                self.upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            }
            let take = (SEGMENT - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    pub fn plaintext_bytes(&self) -> u64 {
        self.plaintext_bytes
    }

    pub async fn finish(mut self) -> Result<(), BlobError> {
        let e = self.encryptor.take().ok_or(BlobError::Corrupt)?;
        let sealed = e
            .encrypt_last(&self.pending[..])
            .map_err(|_| BlobError::Corrupt)?;
        self.upload.write(&sealed);
        self.upload.finish().await?;
        Ok(())
    }

    pub async fn abort(self) {
        if let Err(e) = self.upload.abort().await {
            tracing::warn!(error = %e, "could not abort a partial blob upload");
        }
    }
}

/// Convenience for tests and small blobs: write `data` whole.
pub async fn put_all(
    store: &BlobStore,
    key: &str,
    file_key: &FileKey,
    data: &[u8],
) -> Result<(), BlobError> {
    let mut w = store.writer(key, file_key).await?;
    for piece in data.chunks(SEGMENT) {
        w.write(piece).await?;
    }
    w.finish().await
}

/// Bytes as stored for `n` plaintext bytes (for tests of the format).
pub fn stored_len(n: u64) -> u64 {
    let segments = n.div_ceil(SEGMENT as u64).max(1);
    (MAGIC.len() + NONCE_PREFIX) as u64 + n + segments * TAG as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &std::path::Path) -> BlobStore {
        BlobStore {
            store: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap()),
            describe: "test".into(),
            local: Some(dir.to_owned()),
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn files_of_every_size_round_trip_and_are_stored_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let key = FileKey::generate().unwrap();
        for n in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5] {
            let name = format!("documents/f{n}");
            let plain = data(n);
            put_all(&store, &name, &key, &plain).await.unwrap();
            let stored = std::fs::read(dir.path().join(&name)).unwrap();
            assert_eq!(stored.len() as u64, stored_len(n as u64), "size {n}");
            if n >= 64 {
                assert!(
                    !stored.windows(64).any(|w| w == &plain[..64]),
                    "plaintext at rest"
                );
            }
            assert_eq!(
                store.read_all(&name, &key, u64::MAX).await.unwrap(),
                plain,
                "size {n}"
            );
        }
        assert!(matches!(
            store.read_all("documents/f1", &key, 0).await,
            Err(BlobError::TooLarge(0))
        ));
    }

    #[tokio::test]
    async fn tampering_truncation_and_the_wrong_key_fail_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let key = FileKey::generate().unwrap();
        let plain = data(3 * SEGMENT + 100);
        put_all(&store, "documents/x", &key, &plain).await.unwrap();
        let path = dir.path().join("documents/x");
        let original = std::fs::read(&path).unwrap();
        let header = MAGIC.len() + NONCE_PREFIX;
        let cases: Vec<Vec<u8>> = vec![
            // A flipped byte in the second segment.
            {
                let mut b = original.clone();
                b[header + SEGMENT + TAG + 10] ^= 1;
                b
            },
            // Cut inside the last segment.
            original[..original.len() - 10].to_vec(),
            // Cut exactly after a whole segment: the last-segment flag is missing.
            original[..header + 2 * (SEGMENT + TAG)].to_vec(),
            // Segments swapped.
            {
                let mut b = original[..header].to_vec();
                b.extend_from_slice(
                    &original[header + SEGMENT + TAG..header + 2 * (SEGMENT + TAG)],
                );
                b.extend_from_slice(&original[header..header + SEGMENT + TAG]);
                b.extend_from_slice(&original[header + 2 * (SEGMENT + TAG)..]);
                b
            },
            // Not a blob at all.
            b"hello".to_vec(),
        ];
        for (i, bytes) in cases.into_iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            assert!(
                matches!(
                    store.read_all("documents/x", &key, u64::MAX).await,
                    Err(BlobError::Corrupt)
                ),
                "case {i} opened"
            );
        }
        std::fs::write(&path, &original).unwrap();
        let other = FileKey::generate().unwrap();
        assert!(matches!(
            store.read_all("documents/x", &other, u64::MAX).await,
            Err(BlobError::Corrupt)
        ));
        assert_eq!(
            store.read_all("documents/x", &key, u64::MAX).await.unwrap(),
            plain
        );
    }
}
