#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! `local-client attestation verify` on the real AWS documents: its JSON on success, exit 8
//! naming the check otherwise; and live servers attesting with the simulated security
//! module, checked on every connection by the client's real verifier: PCRs, root, and the
//! binding of the document to the TLS key of the connection.

use std::{path::Path, sync::Arc};

use keyserver_tests::{Client, Server, bin, nitro_vectors};

fn client(dir: &Path) -> Client {
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

/// A data dir with a simulated security module, and a server attesting with it.
fn attested_server(tmp: &Path) -> Server {
    let dir = tmp.join("data");
    let out = std::process::Command::new(bin("keyserver"))
        .args(["init", "--simulated-attestation", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    Server::start(&dir, &["--attestation", "simulated"])
}

/// `--expect-pcrs` and `--attestation-root` of the server's simulated module.
fn trust(server: &Server) -> (String, String) {
    let m = server.data_dir.join("simulated-attestation");
    let s = |f: &str| m.join(f).to_str().unwrap().to_string();
    (s("pcrs.json"), s("root.pem"))
}

fn attested_client(server: &Server, tmp: &Path) -> Client {
    Client {
        server: server.addr.clone(),
        // No CA: the attestation vouches for the certificate.
        ca: tmp.join("no-such-ca.pem"),
        server_name: None,
        state_dir: tmp.join("state"),
    }
}

#[test]
fn an_attested_server_is_checked_on_every_connection_over_quic_and_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let server = attested_server(tmp.path());
    let c = attested_client(&server, tmp.path());
    let (pcrs, root) = trust(&server);
    let env = [
        ("KEYSERVER_EXPECT_PCRS", pcrs.as_str()),
        ("KEYSERVER_ATTESTATION_ROOT", root.as_str()),
        ("KEYSERVER_PASSWORD", "pw"),
    ];
    c.run(&["register", "--user", "alice"], None, &env, b"")
        .ok();
    c.run(
        &["store", "--user", "alice", "--name", "n", "--file", "-"],
        None,
        &env,
        b"attested",
    )
    .ok();
    let got = c
        .run(
            &["retrieve", "--user", "alice", "--name", "n"],
            None,
            &env,
            b"",
        )
        .ok();
    assert_eq!(got.stdout, b"attested");
    let tcp = Client {
        server: server.tcp_addr,
        ..c.clone()
    };
    let got = tcp
        .run(
            &[
                "retrieve",
                "--user",
                "alice",
                "--name",
                "n",
                "--transport",
                "tcp",
            ],
            None,
            &env,
            b"",
        )
        .ok();
    assert_eq!(got.stdout, b"attested");

    // Other PCRs: refused before the password is used.
    let wrong = tmp.path().join("wrong-pcrs.json");
    let mut p: serde_json::Value = serde_json::from_slice(&std::fs::read(&pcrs).unwrap()).unwrap();
    p["1"] = "11".repeat(48).into();
    std::fs::write(&wrong, p.to_string()).unwrap();
    let out = c.run(
        &["retrieve", "--user", "alice", "--name", "n"],
        None,
        &[
            ("KEYSERVER_EXPECT_PCRS", wrong.to_str().unwrap()),
            ("KEYSERVER_ATTESTATION_ROOT", root.as_str()),
            ("KEYSERVER_PASSWORD", "pw"),
        ],
        b"",
    );
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("PCR1"), "{out:?}");
    assert!(out.stdout.is_empty());
    // The AWS root by default: a test root's documents are not an enclave's.
    let out = c.run(
        &["list", "--user", "alice"],
        None,
        &[
            ("KEYSERVER_EXPECT_PCRS", pcrs.as_str()),
            ("KEYSERVER_PASSWORD", "pw"),
        ],
        b"",
    );
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("trusted root"), "{out:?}");
    // Without --expect-pcrs the client wants a CA as always, and this one has none.
    let out = c.with_password("pw", &["list", "--user", "alice"]);
    assert_eq!(out.code, 6, "{out:?}");
}

#[test]
fn a_server_without_attestation_is_refused_with_exit_8() {
    let tmp = tempfile::tempdir().unwrap();
    let attested = attested_server(tmp.path());
    let (pcrs, root) = trust(&attested);
    let plain_dir = tmp.path().join("plain");
    keyserver_tests::init_data_dir(&plain_dir);
    let plain = Server::start(&plain_dir, &[]);
    let out = plain.client().run(
        &["register", "--user", "bob"],
        Some("pw"),
        &[
            ("KEYSERVER_EXPECT_PCRS", pcrs.as_str()),
            ("KEYSERVER_ATTESTATION_ROOT", root.as_str()),
        ],
        b"",
    );
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("attestation missing"), "{out:?}");
}

/// A host that terminates TLS itself (with a certificate of its own) and passes requests
/// on to the enclave gets the enclave's real document, which names the enclave's key, not
/// its own: the client refuses before sending anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_terminating_tls_itself_is_caught_by_the_key_binding() {
    let tmp = tempfile::tempdir().unwrap();
    let server = attested_server(tmp.path());
    let (pcrs, root) = trust(&server);
    // The host's own certificate: any data dir's.
    let host_dir = tmp.path().join("host");
    keyserver_tests::init_data_dir(&host_dir);
    let (certs, key) = keyserver::pki::load_server_identity(&host_dir).unwrap();
    let accept = tokio_rustls::TlsAcceptor::from(Arc::new(
        keyserver::transport::tls::server_config(certs, key).unwrap(),
    ));
    let upstream = server.tcp_addr.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (accept, upstream) = (accept.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut client) = accept.accept(tcp).await else {
                    return;
                };
                let tls = local_client::connect::tls_config_attested().unwrap();
                let to = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut enclave = tokio_rustls::TlsConnector::from(Arc::new(tls))
                    .connect(name, to)
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut enclave).await;
            });
        }
    });
    let c = Client {
        server: addr,
        ca: tmp.path().join("no-ca.pem"),
        server_name: None,
        state_dir: tmp.path().join("state"),
    };
    let out = tokio::task::spawn_blocking(move || {
        c.run(
            &["register", "--user", "carol", "--transport", "tcp"],
            Some("pw"),
            &[
                ("KEYSERVER_EXPECT_PCRS", pcrs.as_str()),
                ("KEYSERVER_ATTESTATION_ROOT", root.as_str()),
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 8, "{out:?}");
    assert!(out.stderr.contains("not bound to the TLS key"), "{out:?}");
    // Nothing but the attestation request went through the host: carol was never
    // registered, and registers now, directly.
    let direct = attested_client(&server, tmp.path());
    let (pcrs, root) = trust(&server);
    let out = tokio::task::spawn_blocking(move || {
        direct.run(
            &["register", "--user", "carol"],
            Some("pw"),
            &[
                ("KEYSERVER_EXPECT_PCRS", pcrs.as_str()),
                ("KEYSERVER_ATTESTATION_ROOT", root.as_str()),
            ],
            b"",
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
}
