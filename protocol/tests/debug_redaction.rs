#![allow(clippy::unwrap_used, reason = "tests")]
//! `Debug` of every type that holds a secret prints no secret: no key bytes in hex or in
//! decimal, no password, no plaintext.

use keyserver_protocol::{
    SecretBytes, SecretName, UserName,
    handshake::{login, registration},
    seal::{MasterKey, StorageKey},
    secret::Key32,
    session::{ClientChannel, ServerChannel, SessionKeys},
    suite::KsfParams,
};
use rand::{SeedableRng, rngs::StdRng};

fn leaks(debug: &str, secret: &[u8]) -> bool {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let dec = format!("{:?}", secret);
    let dec_inner = dec.trim_start_matches('[').trim_end_matches(']');
    debug.contains(&hex[..16])
        || (secret.len() > 4 && debug.contains(&dec_inner[..dec_inner.len().min(20)]))
}

#[test]
fn no_secret_reaches_a_debug_string() {
    let mut rng = StdRng::seed_from_u64(9);
    let user = UserName::new("alice").unwrap();
    let password = b"correct horse battery staple";
    let pw = SecretBytes::new(password.to_vec());
    assert!(!format!("{pw:?}").contains("horse"));

    let keys = SessionKeys::derive(&[0x42; 64]);
    let (c2s, s2c) = (*keys.c2s.expose_secret(), *keys.s2c.expose_secret());
    for d in [
        format!("{keys:?}"),
        format!("{:?}", ServerChannel::new(&keys)),
        format!("{:?}", ClientChannel::new(keys).unwrap()),
    ] {
        assert!(!leaks(&d, &c2s) && !leaks(&d, &s2c), "{d}");
    }
    let k = Key32::from_bytes([0x17; 32]);
    assert!(!leaks(&format!("{k:?}"), &[0x17; 32]));

    let sk = StorageKey::generate(&mut rng);
    let mk = MasterKey::derive(&[5; 64]);
    assert_eq!(format!("{sk:?}"), "StorageKey(Key32(REDACTED))");
    assert_eq!(format!("{mk:?}"), "MasterKey(Key32(REDACTED))");

    let setup = keyserver_protocol::ServerSetup::new(&mut rng);
    let (flow, req) = registration::start(&mut rng, &user, &pw).unwrap();
    assert!(!format!("{flow:?}").contains("horse"));
    let resp = registration::respond(&setup, b"credential id", req.as_slice()).unwrap();
    let fin = flow
        .finish(
            &mut rng,
            &pw,
            resp.as_slice(),
            KsfParams::INSECURE_TEST_ONLY,
        )
        .unwrap();
    let record = registration::record(fin.upload.as_slice()).unwrap();
    assert!(format!("{fin:?}").contains("REDACTED"));

    let (flow, ke1) = login::start(&mut rng, &user, &pw).unwrap();
    let d = format!("{flow:?}");
    assert!(!d.contains("horse") && !d.contains("oprf"), "{d}");
    let (state, ke2) = login::respond(
        &mut rng,
        &setup,
        Some(&record),
        b"credential id",
        &user,
        ke1.as_slice(),
    )
    .unwrap();
    assert_eq!(format!("{state:?}"), "ServerLoginState(REDACTED)");
    let fin = flow
        .finish(&mut rng, &pw, ke2.as_slice(), KsfParams::INSECURE_TEST_ONLY)
        .unwrap();
    let d = format!("{fin:?}");
    assert!(!leaks(&d, fin.session.c2s.expose_secret()), "{d}");

    let name = SecretName::new("wallet").unwrap();
    let secret = SecretBytes::new(b"SEED WORDS".to_vec());
    let opened = sk
        .open_secret(
            &user,
            &name,
            1,
            &sk.seal_secret(&mut rng, &user, &name, 1, &secret).unwrap(),
        )
        .unwrap();
    assert!(!format!("{opened:?}").contains("SEED"));
}
