//! The backup file format.
//!
//! ```text
//! "CAIRNBACKUP1"            12 bytes
//! header length, header     u32 big-endian, JSON (plaintext: what `list` shows)
//! sealed key length, key    u32 big-endian, the backup's random key sealed with the data key,
//!                           bound to the header bytes (editing the header breaks the seal)
//! nonce prefix              19 bytes
//! segments                  STREAM over XChaCha20-Poly1305: 1 MiB of plaintext + 16-byte tag
//!                           each, the last one marked as last
//! ```
//!
//! The plaintext is a zstd-compressed tar stream: the database (`database/…`), the blobs as
//! stored (`blobs/<key>`, still encrypted with their own keys), then `manifest.json` with the
//! size and SHA-256 of every other entry and the row count of every table. A file cut short
//! anywhere fails to open (the last segment is missing or not marked last); a changed byte
//! fails its segment's tag.

use std::io::{self, Read, Write};

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::BackupError;

pub const MAGIC: &[u8; 12] = b"CAIRNBACKUP1";
const NONCE_PREFIX: usize = 19;
const SEGMENT: usize = 1024 * 1024;
const TAG: usize = 16;
/// The file name suffix of a finished backup.
pub const SUFFIX: &str = ".cairnbackup";
/// Largest header or sealed key accepted when reading (a corrupt length must not allocate).
const MAX_HEADER: u32 = 64 * 1024;

/// What a backup says about itself before it is opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub created_at: String,
    pub cairn_version: String,
    pub schema_version: i64,
    pub backend: String,
    /// `manual`, `scheduled` or `api`.
    pub trigger: String,
}

/// One entry of the archive, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The last entry of every backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(flatten)]
    pub header: Header,
    pub tables: Vec<cairn_store::backup::TableInfo>,
    pub files: Vec<FileEntry>,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Blobs of documents in the snapshot that were gone when they were copied (a document
    /// purged while the backup ran).
    #[serde(default)]
    pub missing_blobs: Vec<String>,
}

pub const MANIFEST_PATH: &str = "manifest.json";

/// Write the plaintext preamble and return the encrypting writer for the rest.
pub fn start<W: Write>(
    mut out: W,
    header: &Header,
    data_key: &[u8; 32],
) -> Result<SealWriter<W>, BackupError> {
    let header_bytes =
        serde_json::to_vec(header).map_err(|e| BackupError::Internal(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut()).map_err(|_| BackupError::Internal("no randomness".into()))?;
    let sealed = crate::crypto::seal(data_key, key.as_ref(), &header_bytes)
        .map_err(|e| BackupError::Internal(e.to_string()))?;
    let mut nonce = [0u8; NONCE_PREFIX];
    getrandom::fill(&mut nonce).map_err(|_| BackupError::Internal("no randomness".into()))?;
    out.write_all(MAGIC)?;
    out.write_all(
        &u32::try_from(header_bytes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    )?;
    out.write_all(&header_bytes)?;
    out.write_all(
        &u32::try_from(sealed.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    )?;
    out.write_all(&sealed)?;
    out.write_all(&nonce)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
    Ok(SealWriter {
        out,
        encryptor: Some(EncryptorBE32::from_aead(cipher, nonce.as_ref().into())),
        pending: Vec::with_capacity(SEGMENT),
    })
}

/// Read just the header (for listing), without the data key.
pub fn read_header<R: Read>(mut input: R) -> Result<Header, BackupError> {
    let (header, _) = read_preamble_parts(&mut input)?;
    serde_json::from_slice(&header)
        .map_err(|e| BackupError::Corrupt(format!("the header is not readable: {e}")))
}

fn read_u32<R: Read>(input: &mut R, what: &str) -> Result<u32, BackupError> {
    let mut b = [0u8; 4];
    input
        .read_exact(&mut b)
        .map_err(|_| BackupError::Corrupt(format!("the file ends inside its {what}")))?;
    let n = u32::from_be_bytes(b);
    if n > MAX_HEADER {
        return Err(BackupError::Corrupt(format!(
            "its {what} length is implausible ({n})"
        )));
    }
    Ok(n)
}

fn read_preamble_parts<R: Read>(input: &mut R) -> Result<(Vec<u8>, Vec<u8>), BackupError> {
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| BackupError::Corrupt("the file is too short to be a Cairn backup".into()))?;
    if &magic != MAGIC {
        return Err(BackupError::Corrupt(
            "the file is not a Cairn backup".into(),
        ));
    }
    let n = read_u32(input, "header")?;
    let mut header = vec![0u8; n as usize];
    input
        .read_exact(&mut header)
        .map_err(|_| BackupError::Corrupt("the file ends inside its header".into()))?;
    let n = read_u32(input, "sealed key")?;
    let mut sealed = vec![0u8; n as usize];
    input
        .read_exact(&mut sealed)
        .map_err(|_| BackupError::Corrupt("the file ends inside its sealed key".into()))?;
    Ok((header, sealed))
}

/// Read the preamble, unseal the backup's key, and return the header and a reader of the
/// decrypted stream.
pub fn open<R: Read>(
    mut input: R,
    data_key: &[u8; 32],
) -> Result<(Header, OpenReader<R>), BackupError> {
    let (header_bytes, sealed) = read_preamble_parts(&mut input)?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| BackupError::Corrupt(format!("the header is not readable: {e}")))?;
    let key = Zeroizing::new(
        crate::crypto::open(data_key, &sealed, &header_bytes).map_err(|_| BackupError::WrongKey)?,
    );
    if key.len() != 32 {
        return Err(BackupError::Corrupt(
            "the sealed key has the wrong size".into(),
        ));
    }
    let mut nonce = [0u8; NONCE_PREFIX];
    input
        .read_exact(&mut nonce)
        .map_err(|_| BackupError::Corrupt("the file ends before its contents".into()))?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key));
    Ok((
        header,
        OpenReader {
            input,
            decryptor: Some(DecryptorBE32::from_aead(cipher, nonce.as_ref().into())),
            cipher_buf: Vec::with_capacity(SEGMENT + TAG + 1),
            plain: Vec::new(),
            plain_at: 0,
            done: false,
        },
    ))
}

/// Encrypts everything written to it, a segment at a time; [`finish`](Self::finish) seals the
/// last segment. Dropped unfinished, it leaves a file that never opens.
pub struct SealWriter<W: Write> {
    out: W,
    encryptor: Option<EncryptorBE32<XChaCha20Poly1305>>,
    pending: Vec<u8>,
}

impl<W: Write> SealWriter<W> {
    pub fn finish(mut self) -> io::Result<W> {
        let e = self
            .encryptor
            .take()
            .ok_or_else(|| io::Error::other("already finished"))?;
        let sealed = e
            .encrypt_last(&self.pending[..])
            .map_err(|_| io::Error::other("encryption failed"))?;
        self.out.write_all(&sealed)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.pending.len() == SEGMENT {
                let e = self
                    .encryptor
                    .as_mut()
                    .ok_or_else(|| io::Error::other("already finished"))?;
                let sealed = e
                    .encrypt_next(&self.pending[..])
                    .map_err(|_| io::Error::other("encryption failed"))?;
                self.out.write_all(&sealed)?;
                self.pending.clear();
            }
            let take = (SEGMENT - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decrypts a backup's segments as they are read. Any tampering or truncation is an
/// `InvalidData` error naming it.
pub struct OpenReader<R: Read> {
    input: R,
    decryptor: Option<DecryptorBE32<XChaCha20Poly1305>>,
    cipher_buf: Vec<u8>,
    plain: Vec<u8>,
    plain_at: usize,
    done: bool,
}

fn tampered(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl<R: Read> OpenReader<R> {
    fn refill(&mut self) -> io::Result<()> {
        // One byte beyond a whole segment tells whether this segment is the last.
        let want = SEGMENT + TAG + 1;
        while self.cipher_buf.len() < want {
            let at = self.cipher_buf.len();
            self.cipher_buf.resize(want, 0);
            let n = match self.input.read(&mut self.cipher_buf[at..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.cipher_buf.truncate(at);
                    continue;
                }
                Err(e) => {
                    self.cipher_buf.truncate(at);
                    return Err(e);
                }
            };
            self.cipher_buf.truncate(at + n);
            if n == 0 {
                break;
            }
        }
        if self.cipher_buf.len() == want {
            let d = self
                .decryptor
                .as_mut()
                .ok_or_else(|| tampered("data after the last segment"))?;
            self.plain = d
                .decrypt_next(&self.cipher_buf[..SEGMENT + TAG])
                .map_err(|_| {
                    tampered("a segment fails authentication: the backup was changed or damaged")
                })?;
            self.cipher_buf.drain(..SEGMENT + TAG);
        } else {
            let d = self
                .decryptor
                .take()
                .ok_or_else(|| tampered("data after the last segment"))?;
            self.plain = d.decrypt_last(&self.cipher_buf[..]).map_err(|_| {
                tampered("the backup is truncated or damaged (its last segment does not open)")
            })?;
            self.cipher_buf.clear();
            self.done = true;
        }
        self.plain_at = 0;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.plain_at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = (self.plain.len() - self.plain_at).min(buf.len());
        buf[..n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        Ok(n)
    }
}

/// Passes bytes through while hashing and counting them.
pub struct Hashing<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<R> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn digest(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: 1,
            created_at: "2026-01-01T00:00:00Z".into(),
            cairn_version: "0.1.0".into(),
            schema_version: 9,
            backend: "sqlite".into(),
            trigger: "manual".into(),
        }
    }

    fn sealed(data: &[u8], key: &[u8; 32]) -> Vec<u8> {
        let mut w = start(Vec::new(), &header(), key).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn read_all(file: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, String> {
        let (_, mut r) = open(file, key).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_segment_boundary() {
        let key = [7u8; 32];
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            2 * SEGMENT + 5,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let file = sealed(&data, &key);
            assert_eq!(read_all(&file, &key).unwrap(), data, "length {len}");
        }
    }

    #[test]
    fn truncation_tampering_and_wrong_keys_are_refused() {
        let key = [7u8; 32];
        let data = vec![42u8; 2 * SEGMENT + 10];
        let file = sealed(&data, &key);
        // Cut anywhere in the contents, including exactly at a segment boundary.
        let start_of_segments = file.len() - (data.len() + 3 * TAG);
        for cut in [
            file.len() - 1,
            start_of_segments + SEGMENT + TAG,
            start_of_segments + 2 * (SEGMENT + TAG),
            start_of_segments + 5,
        ] {
            let err = read_all(&file[..cut], &key).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("authentication"),
                "{cut}: {err}"
            );
        }
        let mut flipped = file.clone();
        flipped[start_of_segments + 100] ^= 1;
        assert!(read_all(&flipped, &key)
            .unwrap_err()
            .contains("authentication"));
        assert!(read_all(&file, &[8u8; 32])
            .unwrap_err()
            .contains("data key"));
        // The header is bound to the sealed key.
        let mut edited = file.clone();
        let at = MAGIC.len() + 4 + 20;
        edited[at] = if edited[at] == b'1' { b'2' } else { b'1' };
        assert!(read_all(&edited, &key).is_err());
        assert_eq!(read_header(&file[..]).unwrap(), header());
        assert!(read_header(&b"not a backup at all"[..]).is_err());
    }
}
