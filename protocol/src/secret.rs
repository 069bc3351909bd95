//! Types that hold secrets: zeroized on drop, redacted in `Debug`, readable only through
//! `expose_secret()` so that every read is visible in review.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Secret bytes of any length: a password, a plaintext secret.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroized when this is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes (not secret: it is visible on the wire anyway).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(mut v: Zeroizing<Vec<u8>>) -> Self {
        Self(std::mem::take(&mut *v))
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(REDACTED, {} bytes)", self.0.len())
    }
}

/// A 32-byte key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(REDACTED)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_secret_bytes() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"));
        assert!(!d.contains("104")); // 'h' as a decimal byte
        let k = Key32::from_bytes([0xAB; 32]);
        let d = format!("{k:?}");
        assert!(!d.to_lowercase().contains("ab"), "{d}");
        assert!(!d.contains("171"));
    }
}
