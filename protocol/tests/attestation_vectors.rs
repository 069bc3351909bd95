#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a panic is how a test fails"
)]
//! The attestation verifier on real AWS Nitro documents (`../shared/nitro-vectors`): each
//! verifies at its own time and is expired now; every check refuses what it must; no flipped
//! byte gets through.

use keyserver_protocol::attestation::{
    AWS_NITRO_ROOT_SHA256, AttestationError, Expectations, TrustedRoot, spki_of, verify,
};
use sha2::Digest;

use keyserver_tests::nitro_vectors as vectors;

struct Vector {
    doc: Vec<u8>,
    at: u64,
    meta: serde_json::Value,
}

fn vector(dir: &std::path::Path, which: &str) -> Vector {
    let all: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("attestations.json")).unwrap()).unwrap();
    let meta = all[which].clone();
    Vector {
        doc: std::fs::read(dir.join(meta["file"].as_str().unwrap())).unwrap(),
        at: meta["check_time_unix"].as_u64().unwrap(),
        meta,
    }
}

fn hex_or_none(v: &serde_json::Value) -> Option<Vec<u8>> {
    let s = v.as_str().unwrap();
    (!s.is_empty()).then(|| hex::decode(s).unwrap())
}

fn debug_ok() -> Expectations {
    Expectations {
        allow_debug: true,
        ..Expectations::default()
    }
}

#[test]
fn the_real_documents_verify_at_their_own_time_and_say_what_aws_listed() {
    let Some(dir) = vectors() else { return };
    let root = std::fs::read_to_string(dir.join("aws-nitro-root.pem")).unwrap();
    let root_der = pem_body(&root);
    assert_eq!(
        sha2::Sha256::digest(&root_der).as_slice(),
        AWS_NITRO_ROOT_SHA256
    );
    for which in ["a", "c"] {
        let v = vector(&dir, which);
        for root in [TrustedRoot::AWS, TrustedRoot::Der(&root_der)] {
            let doc = verify(&v.doc, root, v.at).unwrap();
            assert_eq!(doc.module_id, v.meta["module_id"].as_str().unwrap());
            assert_eq!(doc.timestamp_ms, v.meta["timestamp_ms"].as_u64().unwrap());
            for (i, hex) in v.meta["pcrs"].as_object().unwrap() {
                let i: u8 = i.parse().unwrap();
                assert_eq!(
                    doc.pcrs[&i],
                    hex::decode(hex.as_str().unwrap()).unwrap(),
                    "PCR{i}"
                );
            }
            assert_eq!(doc.user_data, hex_or_none(&v.meta["user_data_hex"]));
            assert_eq!(doc.nonce, hex_or_none(&v.meta["nonce_hex"]));
            assert_eq!(doc.public_key, hex_or_none(&v.meta["public_key_hex"]));
            debug_ok().check(&doc, v.at).unwrap();
        }
        // The tagged form (CBOR tag 18) is the same document.
        let mut tagged = vec![0xd2];
        tagged.extend_from_slice(&v.doc);
        verify(&tagged, TrustedRoot::AWS, v.at).unwrap();
    }
}

#[test]
#[allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "the present time is what this test is about; the verifier itself takes it as an argument"
)]
fn at_the_present_time_the_documents_are_expired() {
    let Some(dir) = vectors() else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for which in ["a", "c"] {
        let v = vector(&dir, which);
        assert_eq!(
            verify(&v.doc, TrustedRoot::AWS, now),
            Err(AttestationError::Expired { at: now })
        );
        // And before the leaf was made.
        assert!(matches!(
            verify(&v.doc, TrustedRoot::AWS, 1_600_000_000),
            Err(AttestationError::Expired { .. })
        ));
    }
}

#[test]
fn each_expectation_refuses_what_it_must() {
    let Some(dir) = vectors() else { return };
    let c = vector(&dir, "c");
    let doc = verify(&c.doc, TrustedRoot::AWS, c.at).unwrap();
    // A debug enclave (PCR0, 1, 2 zero) unless allowed, even with those PCRs expected.
    let zeros: std::collections::BTreeMap<u8, Vec<u8>> = (0..3).map(|i| (i, vec![0; 48])).collect();
    let pinned_zero = Expectations {
        pcrs: zeros.clone(),
        ..Expectations::default()
    };
    assert_eq!(
        pinned_zero.check(&doc, c.at),
        Err(AttestationError::DebugEnclave)
    );
    // PCRs not the expected ones, PCR8 included.
    for i in [0u8, 1, 2, 8] {
        let mut pcrs = zeros.clone();
        pcrs.insert(i, vec![1; 48]);
        let e = Expectations { pcrs, ..debug_ok() };
        assert_eq!(e.check(&doc, c.at), Err(AttestationError::Pcr(i)));
    }
    // Bound to the TLS key it names, and to no other.
    let tls = std::fs::read(dir.join("attestation-c-tls-cert.der")).unwrap();
    let bound = Expectations {
        tls_spki: Some(spki_of(&tls).unwrap()),
        nonce: doc.nonce.clone(),
        ..debug_ok()
    };
    bound.check(&doc, c.at).unwrap();
    let other = Expectations {
        tls_spki: Some(spki_of(&doc.certificate).unwrap()),
        ..debug_ok()
    };
    assert_eq!(other.check(&doc, c.at), Err(AttestationError::NotBound));
    // Another nonce: a replayed document.
    let replay = Expectations {
        nonce: Some(vec![7; 32]),
        ..debug_ok()
    };
    assert_eq!(replay.check(&doc, c.at), Err(AttestationError::Nonce));
    // Too old for an online check (2 h 14 min at its check time).
    let fresh = Expectations {
        max_age_secs: Some(300),
        ..debug_ok()
    };
    assert!(matches!(
        fresh.check(&doc, c.at),
        Err(AttestationError::Stale { .. })
    ));
    // Another root.
    assert_eq!(
        verify(&c.doc, TrustedRoot::Fingerprint([0; 32]), c.at),
        Err(AttestationError::UntrustedRoot)
    );
    assert_eq!(
        verify(&c.doc, TrustedRoot::Der(&tls), c.at),
        Err(AttestationError::UntrustedRoot)
    );
}

#[test]
fn no_flipped_byte_and_no_truncation_gets_through() {
    let Some(dir) = vectors() else { return };
    let a = vector(&dir, "a");
    for n in (0..a.doc.len()).step_by(5) {
        let mut x = a.doc.clone();
        x[n] ^= 0x01;
        assert!(verify(&x, TrustedRoot::AWS, a.at).is_err(), "byte {n}");
    }
    // The signature's last byte, and the last byte of the payload, each alone.
    for n in [a.doc.len() - 1, a.doc.len() - 100] {
        let mut x = a.doc.clone();
        x[n] ^= 0x80;
        assert!(verify(&x, TrustedRoot::AWS, a.at).is_err(), "byte {n}");
    }
    for n in (0..a.doc.len()).step_by(97) {
        assert!(
            verify(&a.doc[..n], TrustedRoot::AWS, a.at).is_err(),
            "prefix {n}"
        );
    }
    let mut big = a.doc.clone();
    big.resize(17 * 1024, 0);
    assert!(matches!(
        verify(&big, TrustedRoot::AWS, a.at),
        Err(AttestationError::Malformed(_))
    ));
}

fn pem_body(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .unwrap();
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}
