//! Sealing small secrets at rest (TOTP secrets, provider keys) with the data key:
//! XChaCha20-Poly1305 with a random 192-bit nonce stored in front of the ciphertext, and the
//! owning row's id as associated data, so a sealed value copied onto another row does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("could not draw a nonce")]
    Random,
    #[error("the sealed value is corrupt, or was sealed with another key or for another row")]
    Open,
}

pub fn seal(key: &[u8; 32], plaintext: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
    let cipher = XChaCha20Poly1305::new(Key::from_slice(key));
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: bound_to,
            },
        )
        .map_err(|_| SealError::Open)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

pub fn open(key: &[u8; 32], sealed: &[u8], bound_to: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError::Open);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: bound_to,
            },
        )
        .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let key = [3u8; 32];
        let sealed = seal(&key, b"JBSWY3DPEHPK3PXP", b"user-1").unwrap();
        assert!(!sealed.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
        assert_eq!(open(&key, &sealed, b"user-1").unwrap(), b"JBSWY3DPEHPK3PXP");
        assert_eq!(open(&key, &sealed, b"user-2"), Err(SealError::Open));
        assert_eq!(open(&[4u8; 32], &sealed, b"user-1"), Err(SealError::Open));
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(open(&key, &tampered, b"user-1"), Err(SealError::Open));
        assert_ne!(
            seal(&key, b"x", b"u").unwrap(),
            seal(&key, b"x", b"u").unwrap()
        );
    }
}
