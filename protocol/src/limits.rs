//! Every size bound in the protocol, in one place.
//!
//! A parser never allocates more than its input, and its input is never larger than
//! [`MAX_MESSAGE`]. The bounds below are what a legitimate client needs with room to spare;
//! anything larger is refused before it is decoded.

/// Largest user name, in bytes of UTF-8.
pub const MAX_USER_NAME: usize = 64;
/// Largest secret name, in bytes of UTF-8.
pub const MAX_SECRET_NAME: usize = 128;
/// Largest secret a client may store, in bytes of plaintext (64 KiB).
pub const MAX_SECRET: usize = 64 * 1024;
/// Bytes a sealed blob adds to its plaintext: format version (1), nonce (24), tag (16).
/// See `crate::seal`.
pub const SEAL_OVERHEAD: usize = 1 + 24 + 16;
/// Largest sealed secret: the plaintext plus the sealing overhead.
pub const MAX_SEALED_SECRET: usize = MAX_SECRET + SEAL_OVERHEAD;
/// Largest sealed storage key (it is always exactly this size; the bound is for parsers).
pub const MAX_SEALED_STORAGE_KEY: usize = 32 + SEAL_OVERHEAD;
/// Size of a sealed secret name: every name is padded to the longest (a length byte, the
/// name, zeros) before it is sealed, so all sealed names have this size.
pub const MAX_SEALED_NAME: usize = 1 + MAX_SECRET_NAME + SEAL_OVERHEAD;
/// Largest OPAQUE message carried in an envelope. The largest, `CredentialResponse`, is
/// 320 bytes for our suite; opaque-ke checks the exact length when it parses.
pub const MAX_OPAQUE_MESSAGE: usize = 512;
/// Largest sealed request or response body (the operation plus the AEAD tag).
pub const MAX_SEALED_BODY: usize = MAX_SEALED_SECRET + 1024;
/// Largest encoded request or response, on any transport.
pub const MAX_MESSAGE: usize = MAX_SEALED_BODY + 256;
/// Most entries in one page of `list`.
pub const LIST_PAGE: usize = 256;
/// Largest message a server-held key signs in one request (64 KiB): a transaction or a
/// document; anything larger is hashed by the caller and signed as a digest.
pub const MAX_SIGN_MESSAGE: usize = MAX_SECRET;
/// Most events in one page of `audit` (an event about a server-held key carries its name and
/// a digest: about 250 bytes at most).
pub const AUDIT_PAGE: usize = 192;
/// Width of the per-session replay window, in sequence numbers.
pub const REPLAY_WINDOW: u64 = 1024;

/// Bytes of the nonce a client puts in an attestation request.
pub const ATTESTATION_NONCE: usize = 32;
/// Largest attestation document (a Nitro document is about 4.5 KiB).
pub const MAX_ATTESTATION_DOCUMENT: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_of_the_largest_entries_fits_in_one_message() {
        // name + version + size + created + postcard overhead, generously.
        // tag + sealed name + version + size + created + deleted + postcard overhead.
        let entry = 32 + MAX_SEALED_NAME + 3 * 10 + 8;
        assert!(LIST_PAGE * entry < MAX_SEALED_BODY);
        // seq + time + kind + outcome + tag + version + key name + digest + hash, generously.
        let event = 3 * 10 + 4 + 32 + 10 + (3 + MAX_SECRET_NAME) + 33 + 32 + 8;
        assert!(AUDIT_PAGE * event < MAX_SEALED_BODY);
    }
}
