#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a panic is how a test fails"
)]
//! `CiphertextForRecipient` as AWS KMS sends it: the real answers in
//! `../shared/nitro-vectors/kms-cms` are taken apart exactly as documented, and fixtures made
//! by OpenSSL with a test key of this project (`tests/fixtures/cms`) decrypt to their key.

use std::{io::Write, path::PathBuf};

use keyserver::kms::cms;
use rsa::{RsaPrivateKey, pkcs8::DecodePrivateKey};

/// The AWS vectors, checked against their `SHA256SUMS` (missing: a loud failure in CI,
/// where `KEYSERVER_REQUIRE_VECTORS` is set, and a loud skip elsewhere).
fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("KEYSERVER_NITRO_VECTORS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/nitro-vectors"),
        PathBuf::from,
    );
    let sums = dir.join("SHA256SUMS");
    let Ok(text) = std::fs::read_to_string(&sums) else {
        let msg = format!("SKIPPED: the Nitro vectors are not at {}", dir.display());
        assert!(
            std::env::var_os("KEYSERVER_REQUIRE_VECTORS").is_none(),
            "{msg}"
        );
        // Past the test harness's capture, so that CI can see it.
        let _ = writeln!(std::io::stderr(), "{msg}");
        return None;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line.split_once("  ").expect("sha256sum format");
        let bytes = std::fs::read(dir.join(name.trim_start_matches('*'))).unwrap();
        let got = sha256_hex(&bytes);
        assert_eq!(got, sum, "{name} does not match SHA256SUMS");
    }
    Some(dir)
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn the_real_kms_answers_are_taken_apart_exactly() {
    let Some(dir) = vectors() else { return };
    let kms = dir.join("kms-cms");
    for suffix in ["", "_w_ctx"] {
        let read = |n: &str| std::fs::read(kms.join(format!("{n}{suffix}.bin"))).unwrap();
        let e = cms::parse(&read("input_ber")).unwrap();
        assert_eq!(e.encrypted_key, read("encrypted_key_out"), "{suffix}");
        assert_eq!(e.iv.to_vec(), read("iv_out"), "{suffix}");
        assert_eq!(e.ciphertext, read("ciphertext_out"), "{suffix}");
        assert_eq!(e.key_id.len(), 32);
        // Every byte matters: a flipped byte is refused or changes what is read, never
        // panics; truncations are refused.
        let input = read("input_ber");
        for n in 0..input.len() {
            assert!(cms::parse(&input[..n]).is_err(), "prefix of {n} bytes");
            let mut x = input.clone();
            x[n] ^= 0xff;
            if let Ok(other) = cms::parse(&x) {
                assert_ne!(other, e, "byte {n}");
            }
        }
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cms")
            .join(name),
    )
    .unwrap()
}

fn test_key() -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(&String::from_utf8(fixture("key.pem")).unwrap()).unwrap()
}

#[test]
fn what_openssl_encrypts_to_our_key_decrypts_to_the_data_key() {
    let key = test_key();
    for f in ["fixture.ber", "fixture.der"] {
        let got = cms::decrypt(&fixture(f), &key).unwrap();
        assert_eq!(got.as_slice(), fixture("datakey.bin"), "{f}");
    }
    // Another key: refused.
    let other = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    assert_eq!(
        cms::decrypt(&fixture("fixture.ber"), &other).unwrap_err(),
        cms::CmsError::Decrypt
    );
    // The encrypted content altered: refused (bad padding) or another value, never the key.
    let mut altered = fixture("fixture.der");
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(cms::decrypt(&altered, &key).map_or(true, |k| k.as_slice() != fixture("datakey.bin")));
}
