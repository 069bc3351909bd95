#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a panic is how a test fails"
)]
//! `CiphertextForRecipient` as AWS KMS sends it: the real answers in
//! `../shared/nitro-vectors/kms-cms` are taken apart exactly as documented, and fixtures made
//! by OpenSSL with a test key of this project (`tests/fixtures/cms`) decrypt to their key.

use std::path::PathBuf;

use keyserver::kms::cms;
use rsa::{RsaPrivateKey, pkcs8::DecodePrivateKey};

use keyserver_tests::nitro_vectors as vectors;

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
