#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! `local-client attestation verify` on the real AWS documents: its JSON on success, exit 8
//! naming the check otherwise; and `--expect-pcrs` refused, not ignored, where this client
//! cannot yet check a live server.

use keyserver_tests::{Client, nitro_vectors};

fn client(dir: &std::path::Path) -> Client {
    Client {
        server: "127.0.0.1:1".into(),
        ca: dir.join("no-ca.pem"),
        server_name: None,
        state_dir: dir.join("state"),
    }
}

#[test]
fn the_real_documents_verify_offline_and_each_failed_check_is_exit_8() {
    let Some(v) = nitro_vectors() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let doc = v.join("attestation-c.cose");
    let tls = v.join("attestation-c-tls-cert.der");
    let (doc, tls) = (doc.to_str().unwrap(), tls.to_str().unwrap());
    let verify = |extra: &[&str]| {
        let mut args = vec!["attestation", "verify", "--document", doc];
        args.extend_from_slice(extra);
        c.run(&args, None, &[], b"")
    };
    let ok = verify(&[
        "--at",
        "1695057480",
        "--allow-debug-enclave",
        "--tls-cert",
        tls,
    ])
    .ok();
    let j = ok.json();
    assert_eq!(j["module_id"], "i-0918f6c55e3b61d89-enc018aa8b8e2285d13");
    assert_eq!(j["timestamp_ms"], 1_695_049_410_860_u64);
    assert_eq!(j["pcrs"]["0"].as_str().unwrap(), "0".repeat(96));
    assert!(
        j["user_data"]
            .as_str()
            .unwrap()
            .starts_with("3059301306072a8648ce3d0201")
    );
    assert_eq!(j["nonce"].as_str().unwrap().len(), 512);

    let pcrs = tmp.path().join("pcrs.json");
    let h = |b: &str| b.repeat(96);
    std::fs::write(
        &pcrs,
        format!(r#"{{"0":"{}","1":"{}","2":"{}"}}"#, h("1"), h("0"), h("0")),
    )
    .unwrap();
    let pcrs = pcrs.to_str().unwrap();
    for (extra, says) in [
        (vec!["--at", "1695057480"], "debug mode"),
        (vec!["--allow-debug-enclave"], "not valid at"),
        (
            vec![
                "--at",
                "1695057480",
                "--allow-debug-enclave",
                "--expect-pcrs",
                pcrs,
            ],
            "PCR0",
        ),
        (
            vec![
                "--at",
                "1695057480",
                "--allow-debug-enclave",
                "--attestation-root",
                tls,
            ],
            "trusted root",
        ),
    ] {
        let out = verify(&extra);
        assert_eq!(out.code, 8, "{extra:?}: {out:?}");
        assert!(out.stderr.contains(says), "{extra:?}: {out:?}");
        assert!(out.stdout.is_empty());
    }
    // Bound to another key: document a carries no TLS key.
    let a = v.join("attestation-a.cose");
    let out = c.run(
        &[
            "attestation",
            "verify",
            "--document",
            a.to_str().unwrap(),
            "--at",
            "1684362463",
            "--allow-debug-enclave",
            "--tls-cert",
            tls,
        ],
        None,
        &[],
        b"",
    );
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("not bound to the TLS key"), "{out:?}");
    // Garbage.
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"\x84garbage").unwrap();
    let out = c.run(
        &[
            "attestation",
            "verify",
            "--document",
            junk.to_str().unwrap(),
        ],
        None,
        &[],
        b"",
    );
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("malformed"), "{out:?}");
}

#[test]
fn expect_pcrs_is_refused_where_a_live_server_cannot_be_checked_yet() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let pcrs = tmp.path().join("pcrs.json");
    std::fs::write(&pcrs, "{}").unwrap();
    let out = c.run(
        &[
            "retrieve",
            "--user",
            "alice",
            "--name",
            "x",
            "--expect-pcrs",
            pcrs.to_str().unwrap(),
        ],
        Some("pw"),
        &[],
        b"",
    );
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("nothing was sent"), "{out:?}");
}
