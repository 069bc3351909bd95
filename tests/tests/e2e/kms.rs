//! The server's keys in a KMS: the real `keyserver` binary against moto's KMS server, over
//! HTTP with SigV4. Each test starts its own emulator (see `keyserver_tests::Moto`).

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use keyserver_tests::{
    KMS_REGION, Moto, PgSchema, Server, bin, file, random_bytes, sqlite_blob, sqlite_exec,
};

/// The standard AWS environment the server reads its credentials from.
fn aws_env(id: &str, secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", id.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("AWS_REGION", KMS_REGION.to_string()),
    ]
}

fn keyserver(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut c = Command::new(bin("keyserver"));
    c.args(args)
        .env_remove("KEYSERVER_KMS_KEY_ID")
        .env_remove("KEYSERVER_SETUP_KEY")
        .env("KEYSERVER_LOG", "warn")
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn start(dir: &Path, args: &[&str], env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_env(dir, args, &env)
}

/// A start that must fail: its stderr, and how long it took.
fn failed_start(dir: &Path, args: &[&str], env: &[(&'static str, String)]) -> (String, Duration) {
    let mut all = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let t = Instant::now();
    let out = keyserver(&all, env);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    (String::from_utf8_lossy(&out.stderr).into_owned(), took)
}

fn init(dir: &Path, moto: &Moto, key: &str, extra: &[&str], env: &[(&'static str, String)]) {
    let mut args = vec![
        "init",
        "--data-dir",
        dir.to_str().unwrap(),
        "--kms-key-id",
        key,
        "--kms-endpoint",
        &moto.endpoint,
    ];
    args.extend_from_slice(extra);
    let out = keyserver(&args, env);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("wrapped by the KMS key {key}")),
        "{said}"
    );
}

/// The data keys in the keyring `body` (JSON), unwrapped by the emulator: hex.
fn data_keys_in_clear(moto: &Moto, body: &[u8]) -> Vec<String> {
    let ring: serde_json::Value = serde_json::from_slice(body).unwrap();
    let deployment = ring["deployment"].as_str().unwrap();
    ring["data_keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(purpose, wrapped)| {
            moto.decrypt(
                wrapped.as_str().unwrap(),
                &[
                    ("keyserver:purpose", purpose),
                    ("keyserver:deployment", deployment),
                ],
            )
        })
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_deployment_under_a_kms_key_serves_restarts_and_keeps_no_secret_at_rest() {
    let Some(moto) = Moto::start() else { return };
    let env = aws_env("testing", "testing");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = moto.create_key();
    init(&dir, &moto, &key, &[], &env);
    // The provider and key are in the data dir's configuration: serve needs no flag.
    let config = std::fs::read_to_string(dir.join("keyserver.toml")).unwrap();
    assert!(config.contains("provider = \"aws-kms\""), "{config}");
    let mut server = start(&dir, &[], &env);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let secret = random_bytes(64);
    let path = file(tmp.path(), "s.bin", &secret);
    c.with_password(
        "pw",
        &[
            "store", "--user", "alice", "--name", "wallet", "--file", &path,
        ],
    )
    .ok();
    assert_eq!(server.terminate().code(), Some(0));
    // After a restart the same keys unwrap: the account and the secret are there.
    let mut server = start(&dir, &[], &env);
    let c = server.client();
    let got = c.with_password("pw", &["retrieve", "--user", "alice", "--name", "wallet"]);
    assert_eq!(got.ok().stdout, secret);
    assert_eq!(server.terminate().code(), Some(0));
    let db = dir.join("keyserver.db");
    let body = sqlite_blob(&db, "SELECT body FROM keyring");
    // Two purposes' wrapped keys swapped in the database: refused, and named.
    let mut ring: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys = ring["data_keys"].as_object_mut().unwrap();
    let vault = keys["session-vault"].clone();
    keys["session-vault"] = keys["login-names"].clone();
    keys["login-names"] = vault;
    let swapped = serde_json::to_vec(&ring).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    sqlite_exec(
        &db,
        &format!("UPDATE keyring SET body = X'{}'", hex(&swapped)),
    );
    let (err, _) = failed_start(&dir, &[], &env);
    assert!(
        err.contains("session-vault data key does not unwrap"),
        "{err}"
    );
    sqlite_exec(&db, &format!("UPDATE keyring SET body = X'{}'", hex(&body)));
    // At rest: no key file anywhere, and no data key in clear in any file of the data dir
    // (the database, its WAL, the configuration).
    for f in files_under(tmp.path()) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains("setup.key") && !name.contains("setup.sealed"),
            "{name}"
        );
    }
    let body = sqlite_blob(&dir.join("keyserver.db"), "SELECT body FROM keyring");
    let keys = data_keys_in_clear(&moto, &body);
    assert_eq!(keys.len(), 4);
    for f in files_under(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        for k in &keys {
            let k = (0..k.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&k[i..i + 2], 16).unwrap())
                .collect::<Vec<_>>();
            assert!(
                !bytes.windows(k.len()).any(|w| w == k.as_slice()),
                "a data key in clear in {}",
                f.display()
            );
        }
    }
}

#[test]
fn the_key_rotated_while_serving_and_the_old_one_disabled_and_the_current_one_disabled() {
    let Some(moto) = Moto::start() else { return };
    let env = aws_env("testing", "testing");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (old, new) = (moto.create_key(), moto.create_key());
    init(&dir, &moto, &old, &[], &env);
    let mut server = start(&dir, &[], &env);
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let secret = random_bytes(32);
    let path = file(tmp.path(), "s.bin", &secret);
    let store = [
        "store",
        "--user",
        "alice",
        "--name",
        "w",
        "--file",
        &path,
        "--replace",
    ];
    c.with_password("pw", &store).ok();
    // Rotation while the server runs: it keeps serving with what it unwrapped.
    let rotated = keyserver(
        &[
            "rotate-kek",
            "--data-dir",
            dir.to_str().unwrap(),
            "--kms-key-id",
            &new,
        ],
        &env,
    );
    assert!(rotated.status.success(), "{rotated:?}");
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(said.contains(&new) && said.contains(&old), "{said}");
    c.with_password("pw", &store).ok();
    assert_eq!(server.terminate().code(), Some(0));
    // The old key can go: the next start unwraps with the new one.
    moto.disable_key(&old);
    let mut server = start(&dir, &[], &env);
    let got = server
        .client()
        .with_password("pw", &["retrieve", "--user", "alice", "--name", "w"]);
    assert_eq!(got.ok().stdout, secret);
    assert_eq!(server.terminate().code(), Some(0));
    // The current key disabled: the server does not start, and says why.
    moto.disable_key(&new);
    let (err, _) = failed_start(&dir, &[], &env);
    assert!(err.contains("Disabled") && err.contains(&new), "{err}");
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn a_deployment_moves_between_a_key_file_and_kms() {
    let Some(moto) = Moto::start() else { return };
    let env = aws_env("testing", "testing");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key_file = tmp.path().join("data.setup.key");
    // A laptop deployment, on a key file.
    let out = keyserver(&["init", "--data-dir", dir.to_str().unwrap()], &env);
    assert!(out.status.success(), "{out:?}");
    assert!(key_file.is_file());
    let mut server = start(&dir, &[], &env);
    server
        .client()
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    assert_eq!(server.terminate().code(), Some(0));
    // Into KMS: the key file is then not needed.
    let key = moto.create_key();
    let out = keyserver(
        &[
            "rotate-kek",
            "--data-dir",
            dir.to_str().unwrap(),
            "--from-file",
            "--kms-key-id",
            &key,
            "--kms-endpoint",
            &moto.endpoint,
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::rename(&key_file, tmp.path().join("moved-away")).unwrap();
    let mut server = start(&dir, &[], &env);
    server
        .client()
        .with_password("pw", &["audit", "--user", "alice"])
        .ok();
    assert_eq!(server.terminate().code(), Some(0));
    // And back to a (new) key file.
    let out = keyserver(
        &[
            "rotate-kek",
            "--data-dir",
            dir.to_str().unwrap(),
            "--to-file",
        ],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(key_file.is_file());
    let mut server = start(&dir, &[], &env);
    server
        .client()
        .with_password("pw", &["audit", "--user", "alice"])
        .ok();
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn kms_unreachable_or_refusing_the_signature_is_a_clear_exit_1() {
    let Some(mut moto) = Moto::start_with_auth(3) else {
        return;
    };
    let (id, secret) = moto.iam_credentials();
    let env = aws_env(&id, &secret);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // Keys made with the real credentials (the emulator now checks every signature).
    let key = moto.admin(&format!(
        "k = boto3.client('kms', endpoint_url='{}', region_name='{KMS_REGION}', \
         aws_access_key_id='{id}', aws_secret_access_key='{secret}')\n\
         print(k.create_key()['KeyMetadata']['Arn'])",
        moto.endpoint
    ));
    init(&dir, &moto, &key, &[], &env);
    let mut server = start(&dir, &[], &env);
    assert_eq!(server.terminate().code(), Some(0));
    // A request signed with another secret: refused, and said so.
    let (err, _) = failed_start(&dir, &[], &aws_env(&id, "not-the-secret"));
    assert!(err.contains("credentials were refused"), "{err}");
    assert!(
        !err.contains("not-the-secret") && !err.contains(&secret),
        "{err}"
    );
    // KMS down: exit 1 within 30 s, naming the endpoint.
    moto.stop();
    let (err, took) = failed_start(&dir, &[], &env);
    assert!(err.contains(&moto.endpoint), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn three_instances_on_one_postgres_share_the_wrapped_keys_and_only_their_tls_material() {
    let Some(moto) = Moto::start() else { return };
    let Some(pg) = PgSchema::create() else { return };
    let env = aws_env("testing", "testing");
    let tmp = tempfile::tempdir().unwrap();
    let key = moto.create_key();
    let url = pg.url();
    let first = tmp.path().join("instance-0");
    init(&first, &moto, &key, &["--database-url", &url], &env);
    // The other instances get the TLS material and the configuration: no secret of the
    // server's, which is in the database, wrapped.
    let mut dirs = vec![first.clone()];
    for i in 1..3 {
        let d = tmp.path().join(format!("instance-{i}"));
        std::fs::create_dir(&d).unwrap();
        for f in ["ca.pem", "server.pem", "server.key", "keyserver.toml"] {
            std::fs::copy(first.join(f), d.join(f)).unwrap();
        }
        dirs.push(d);
    }
    let mut servers: Vec<_> = dirs
        .iter()
        .map(|d| start(d, &["--database-url", &url], &env))
        .collect();
    servers[0]
        .client()
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    let secret = random_bytes(48);
    let path = file(tmp.path(), "s.bin", &secret);
    let c1 = servers[1].client();
    c1.with_password(
        "pw",
        &["store", "--user", "alice", "--name", "w", "--file", &path],
    )
    .ok();
    let got = servers[2]
        .client()
        .device(&c1.state_dir)
        .with_password("pw", &["retrieve", "--user", "alice", "--name", "w"]);
    assert_eq!(got.ok().stdout, secret);
    for s in &mut servers {
        assert_eq!(s.terminate().code(), Some(0));
    }
}

/// A KMS that accepts connections and never answers (a black hole in the network path):
/// the server gives up within 30 s, naming the endpoint and what went wrong.
#[test]
fn a_kms_that_never_answers_is_an_exit_1_within_30_s() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in listener.incoming().take(64) {
            open.push(c);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let env = aws_env("testing", "testing");
    let key = "arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-0000-0000-000000000000";
    let mut args = vec!["init", "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(&["--kms-key-id", key, "--kms-endpoint", &endpoint]);
    let t = Instant::now();
    let out = keyserver(&args, &env);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.contains("no answer within"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    drop(held);
}
