#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! `local-client keys …` through the real binaries: the output contract (hex on one line,
//! JSON, raw bytes for export), the exit codes, published vectors signed through the server,
//! the audit log, and no private key in the database.

use keyserver_tests::{PgSchema, Server, file};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 8032 §7.1 TEST 2.
const ED_SK: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
const ED_PK: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
const ED_SIG: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";
/// EIP-155's example: key, signing data, r || s || v.
const ETH_SK: &str = "4646464646464646464646464646464646464646464646464646464646464646";
const ETH_DATA: &str =
    "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080";
const ETH_SIG: &str = "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa63627667cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d8300";
/// RFC 6979 over secp256k1, SHA-256: key 1 signing "Satoshi Nakamoto" (btcd, Trezor).
const BTC_SIG: &str = "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d82442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5";

fn keys_through_the_cli(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pg = if postgres {
        match PgSchema::create() {
            Some(pg) => Some(pg),
            None => return,
        }
    } else {
        None
    };
    let url = pg.as_ref().map(PgSchema::url);
    let args: Vec<&str> = url.as_deref().map_or(vec![], |u| vec!["--database-url", u]);
    let server = Server::start(&data, &args);
    let c = server.client();
    let pw = "pw";
    c.with_password(pw, &["register", "--user", "alice"]).ok();
    let keys = |args: &[&str]| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--user", "alice"]);
        c.with_password(pw, &all)
    };
    let line = |o: keyserver_tests::Output| {
        let t = o.ok().text();
        assert!(t.ends_with('\n') && t.lines().count() == 1, "{t:?}");
        t.trim_end().to_string()
    };

    // generate: the public key, hex, one line.
    let hot = line(keys(&[
        "generate",
        "--name",
        "eth-hot",
        "--algorithm",
        "secp256k1",
    ]));
    assert_eq!(hot.len(), 66);
    assert!(hot.starts_with("02") || hot.starts_with("03"), "{hot}");
    let deploy = keys(&[
        "generate",
        "--name",
        "deploy",
        "--algorithm",
        "ed25519",
        "--exportable",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(deploy["name"], "deploy");
    assert_eq!(deploy["algorithm"], "ed25519");
    assert_eq!(deploy["exportable"], true);
    assert_eq!(deploy["public_key"].as_str().unwrap().len(), 64);

    // import from a file and from stdin; the public key printed is the vector's.
    let ed_file = file(tmp.path(), "ed.bin", &unhex(ED_SK));
    let legacy = line(keys(&[
        "import",
        "--name",
        "legacy",
        "--algorithm",
        "ed25519",
        "--file",
        &ed_file,
    ]));
    assert_eq!(legacy, ED_PK);
    let out = c.run(
        &[
            "keys",
            "import",
            "--user",
            "alice",
            "--name",
            "eth-legacy",
            "--algorithm",
            "secp256k1",
            "--file",
            "-",
        ],
        Some(pw),
        &[],
        &unhex(ETH_SK),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let mut btc_key = vec![0u8; 31];
    btc_key.push(1);
    let btc_file = file(tmp.path(), "btc.bin", &btc_key);
    line(keys(&[
        "import",
        "--name",
        "btc",
        "--algorithm",
        "secp256k1",
        "--file",
        &btc_file,
    ]));

    // sign: the published signatures, made by the server.
    let msg = file(tmp.path(), "m.bin", &[0x72]);
    assert_eq!(
        line(keys(&["sign", "--name", "legacy", "--file", &msg])),
        ED_SIG
    );
    let tx = file(tmp.path(), "tx.bin", &unhex(ETH_DATA));
    assert_eq!(
        line(keys(&[
            "sign",
            "--name",
            "eth-legacy",
            "--file",
            &tx,
            "--hash",
            "keccak256",
            "--recoverable",
        ])),
        ETH_SIG
    );
    let satoshi = file(tmp.path(), "satoshi.txt", b"Satoshi Nakamoto");
    assert_eq!(
        line(keys(&["sign", "--name", "btc", "--file", &satoshi])),
        BTC_SIG
    );
    let signed = keys(&["sign", "--name", "eth-hot", "--file", &satoshi, "--json"])
        .ok()
        .json();
    assert_eq!(signed["signature"].as_str().unwrap().len(), 128);
    assert_eq!(signed["public_key"], hot.as_str());
    assert_eq!(signed["signatures"], 1);

    // public and list.
    assert_eq!(line(keys(&["public", "--name", "eth-hot"])), hot);
    let listed = keys(&["list", "--json"]).ok().json();
    let rows: Vec<(String, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_string(),
                k["signatures"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect = [
        ("btc", 1),
        ("deploy", 0),
        ("eth-hot", 1),
        ("eth-legacy", 1),
        ("legacy", 1),
    ];
    assert_eq!(
        rows,
        expect.map(|(n, s)| (n.to_string(), s)).to_vec(),
        "{listed}"
    );
    let text = keys(&["list"]).ok().text();
    assert!(
        text.contains("eth-hot\tsecp256k1\t") && text.contains("1 signature(s)"),
        "{text}"
    );

    // export: raw bytes of an exportable key only.
    let exported = keys(&["export", "--name", "deploy"]).ok().stdout;
    assert_eq!(exported.len(), 32);
    let out = keys(&["export", "--name", "legacy"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("not made exportable") && out.stdout.is_empty(),
        "{out:?}"
    );
    // The exported key is the one whose public key generate printed: imported again
    // elsewhere, it shows the same public key.
    c.with_password(pw, &["register", "--user", "bob"]).ok();
    let exported_file = file(tmp.path(), "exported.bin", &exported);
    let again = c
        .with_password(
            pw,
            &[
                "keys",
                "import",
                "--user",
                "bob",
                "--name",
                "copy",
                "--algorithm",
                "ed25519",
                "--file",
                &exported_file,
            ],
        )
        .ok()
        .text();
    assert_eq!(again.trim_end(), deploy["public_key"].as_str().unwrap());

    // Exit codes: 4 no such key, 7 the name exists, 2 unknown algorithm or bad key file or
    // an option ed25519 does not take.
    let code = |o: keyserver_tests::Output| o.code;
    assert_eq!(
        code(keys(&["sign", "--name", "missing", "--file", &msg])),
        4
    );
    assert_eq!(code(keys(&["public", "--name", "missing"])), 4);
    assert_eq!(
        code(keys(&[
            "generate",
            "--name",
            "eth-hot",
            "--algorithm",
            "ed25519"
        ])),
        7
    );
    assert_eq!(
        code(keys(&["generate", "--name", "x", "--algorithm", "rsa"])),
        2
    );
    let short = file(tmp.path(), "short.bin", &[1; 31]);
    let zero = file(tmp.path(), "zero.bin", &[0; 32]);
    for (f, alg) in [(&short, "ed25519"), (&zero, "secp256k1"), (&msg, "ed25519")] {
        let out = keys(&["import", "--name", "bad", "--algorithm", alg, "--file", f]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("bad key file"), "{out:?}");
    }
    let out = keys(&[
        "sign", "--name", "legacy", "--file", &msg, "--hash", "sha256",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = keys(&["sign", "--name", "btc", "--file", &msg, "--hash", "none"]);
    assert_eq!(out.code, 2, "{out:?}");

    // delete.
    c.with_password(
        pw,
        &["keys", "delete", "--user", "alice", "--name", "legacy"],
    )
    .ok();
    assert_eq!(code(keys(&["public", "--name", "legacy"])), 4);
    assert_eq!(code(keys(&["delete", "--name", "legacy"])), 4);

    // The audit log names each key, and each signature's message by its SHA-256.
    let audit = c
        .with_password(pw, &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    assert_eq!(audit["chain_verified"], true);
    let events = audit["events"].as_array().unwrap();
    let signs: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "key_sign" && e["outcome"] == "ok")
        .map(|e| (e["key"].as_str().unwrap(), e["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(
        signs,
        [
            ("legacy", sha256_hex(&[0x72]).as_str()),
            ("eth-legacy", sha256_hex(&unhex(ETH_DATA)).as_str()),
            ("btc", sha256_hex(b"Satoshi Nakamoto").as_str()),
            ("eth-hot", sha256_hex(b"Satoshi Nakamoto").as_str()),
        ]
    );
    for kind in ["key_generate", "key_import", "key_export", "key_delete"] {
        assert!(events.iter().any(|e| e["kind"] == kind), "{kind}");
    }

    // No private key that was imported or exported is anywhere in the database. (Not the
    // key 1: thirty-one zero bytes and a one are in any database file.)
    let secrets = [unhex(ED_SK), unhex(ETH_SK), exported];
    match &pg {
        None => {
            let mut disk = Vec::new();
            for f in std::fs::read_dir(&data).unwrap() {
                disk.extend(std::fs::read(f.unwrap().path()).unwrap());
            }
            assert!(disk.len() > 10_000);
            for s in &secrets {
                assert!(
                    !disk.windows(32).any(|w| w == s.as_slice()),
                    "the private key {} is on disk",
                    hex(s)
                );
            }
        }
        Some(pg) => {
            let dump = keyserver_tests::pg_dump_text(&pg.url());
            assert!(dump.contains("held_keys") || dump.len() > 1000);
            for s in &secrets {
                assert!(!dump.contains(&hex(s)), "a private key is in the database");
            }
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(b))
}

#[test]
fn keys_through_the_cli_on_sqlite() {
    keys_through_the_cli(false);
}

#[test]
fn keys_through_the_cli_on_postgres() {
    keys_through_the_cli(true);
}
