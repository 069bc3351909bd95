//! The browser client in a real headless Chromium (Debian's, driven by chromedriver): the
//! example page, under the content-security policy the README gives, loads the package
//! `wasm-pack build --target web` made, and runs the flow against the real `keyserver`
//! over WebSocket, with the native CLI on the same account.
//!
//! `.ci/run` builds the package and sets `KEYSERVER_BROWSER_TESTS=1`; without it this test
//! says loudly that it was skipped (and fails in CI).

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
use fantoccini::{Client as Driver, ClientBuilder};
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use keyserver_tests::{Process, Server, init_data_dir, listening, random_bytes};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "correct horse battery staple";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The content-security policy the example page declares (its `<meta>`), sent as a header
/// too, as the README says a page should: the package must work under it.
fn csp() -> String {
    let page =
        std::fs::read_to_string(repo().join("local-client-wasm/example/index.html")).unwrap();
    let at = page
        .find("content=\"default-src")
        .expect("the page declares its policy");
    let rest = &page[at + "content=\"".len()..];
    let policy = &rest[..rest.find('"').unwrap()];
    assert!(
        policy.contains("script-src 'self' 'wasm-unsafe-eval';"),
        "{policy}"
    );
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("'unsafe-eval'"),
        "{policy}"
    );
    policy.to_string()
}

/// Serves `local-client-wasm/` (the example and the package) on a loopback port, as a
/// page's own server would: right types, the policy as a header.
async fn serve_page() -> SocketAddr {
    let root = repo().join("local-client-wasm");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let root = root.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(file_response(&root, req.uri().path()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn file_response(root: &Path, path: &str) -> Response<Full<bytes::Bytes>> {
    let allowed = (path.starts_with("/example/") || path.starts_with("/pkg/"))
        && !path.contains("..")
        && path.len() < 200;
    let file = root.join(path.trim_start_matches('/'));
    let Some(body) = allowed.then(|| std::fs::read(&file).ok()).flatten() else {
        let mut r = Response::new(Full::new(bytes::Bytes::from_static(b"not found")));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        return r;
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css",
        _ => "application/octet-stream",
    };
    Response::builder()
        .header("Content-Type", kind)
        .header("Content-Security-Policy", csp())
        .header("Cache-Control", "no-store")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap()
}

/// A certificate for `localhost` the browser is told to trust by its key's hash
/// (`--ignore-certificate-errors-spki-list`), as a page's operator would have a real one.
fn web_certificate(dir: &Path) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.join("web.pem");
    let key_path = dir.join("web.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let spki = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(
        rcgen::PublicKeyData::subject_public_key_info(&key),
    ));
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
        spki,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn browser(spki: &str, profile: &Path) -> (Process, Driver) {
    let port = free_port();
    let mut cmd = Command::new("chromedriver");
    cmd.arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (driver, _line) = Process::spawn_and_read_line(&mut cmd, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("chromedriver (Debian's chromium-driver) did not start: {e}"));
    // Its first line comes before it listens.
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
                format!("--ignore-certificate-errors-spki-list={spki}"),
            ],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("no Chromium session through chromedriver: {e}"));
    (driver, client)
}

/// Runs `body` (an async function body taking `ks`, the page's module, and `args`) in the
/// page and returns what it resolves to; a rejection comes back as `{error: {name, code,
/// exitCode, reason, message}}`.
async fn run(page: &Driver, body: &str, args: Value) -> Value {
    let script = format!(
        "const [args, done] = [arguments[0], arguments[arguments.length - 1]];
         const ks = window.keyserver;
         (async () => {{ {body} }})().then(done, (e) => done({{ error: {{
             name: e.name, code: e.code, exitCode: e.exitCode, reason: e.reason,
             message: String(e.message) }} }}));"
    );
    page.execute_async(&script, vec![args])
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
}

fn bytes_of(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array of bytes: {v}"))
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_does_the_flow_and_interoperates_with_the_cli() {
    if std::env::var_os("KEYSERVER_BROWSER_TESTS").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "KEYSERVER_BROWSER_TESTS is not set in CI: the browser test cannot run"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: browser test: set KEYSERVER_BROWSER_TESTS=1 after `wasm-pack build \
             --target web local-client-wasm` (needs chromium and chromium-driver)"
        );
        return;
    }
    let pkg = repo().join("local-client-wasm/pkg/local_client_wasm_bg.wasm");
    assert!(
        pkg.exists(),
        "{} is missing: run `wasm-pack build --target web local-client-wasm` first",
        pkg.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let page_addr = serve_page().await;
    let origin = format!("http://{page_addr}");
    let (cert, key, spki) = web_certificate(tmp.path());
    let data = tmp.path().join("data");
    init_data_dir(&data);
    let server = Server::start(
        &data,
        &[
            "--web-listen",
            "127.0.0.1:0",
            "--web-origin",
            &origin,
            "--web-cert",
            &cert,
            "--web-key",
            &key,
        ],
    );
    let web = listening(&server.line, "web").expect("web= in the listening line");
    let web_port = web.rsplit(':').next().unwrap();
    let url = format!("wss://localhost:{web_port}/v1");
    let cli = server.client();

    let (_driver, page) = browser(&spki, &tmp.path().join("chromium")).await;
    page.goto(&format!("{origin}/example/index.html"))
        .await
        .unwrap();
    let ready = run(
        &page,
        "for (let i = 0; i < 200 && !window.keyserver; i++) await new Promise(r => setTimeout(r, 50));
         return Boolean(window.keyserver);",
        json!({}),
    )
    .await;
    assert_eq!(ready, json!(true), "the page did not load the package");

    // The whole flow in the browser, timed.
    let from_browser = random_bytes(1000);
    let flow = run(
        &page,
        "const t0 = performance.now();
         const client = await ks.Client.connect(args.url);
         await client.register('alice', args.password);
         const t1 = performance.now();
         const s = await client.login('alice', args.password);
         const t2 = performance.now();
         const version = await s.store('from-browser', new Uint8Array(args.secret), false);
         const t3 = performance.now();
         const back = await s.retrieve('from-browser');
         const t4 = performance.now();
         let exists = null;
         try { await s.store('from-browser', new Uint8Array([1]), false); } catch (e) { exists = e.code; }
         let missing = null;
         try { await s.retrieve('nothing'); } catch (e) { missing = [e.code, e.exitCode]; }
         const listed = await s.list();
         const audit = await s.audit();
         await s.logout();
         // Logged out here too: the session (its keys) is gone from the client.
         const userAfterLogout = s.user;
         let afterLogout = null;
         try { await s.list(); } catch (e) { afterLogout = e.reason; }
         // What the client knows of the account is in IndexedDB, the default store.
         const db = await new Promise((ok, ko) => {
           const r = indexedDB.open('keyserver-client'); r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
         const stored = await new Promise((ok) => {
           const r = db.transaction('state').objectStore('state').getAll(); r.onsuccess = () => ok(r.result); });
         db.close();
         let wrong = null;
         try { await client.login('alice', 'not the password'); } catch (e) { wrong = [e.code, e.exitCode]; }
         return { version, back: Array.from(back), listed, audit, exists, missing, wrong, afterLogout, userAfterLogout,
                  stored: stored.map((j) => JSON.parse(j)),
                  ms: { register: t1 - t0, login: t2 - t1, store: t3 - t2, retrieve: t4 - t3 } };",
        json!({ "url": url, "password": PASSWORD, "secret": from_browser }),
    )
    .await;
    assert!(flow.get("error").is_none(), "{flow}");
    assert_eq!(flow["version"], json!(1));
    assert_eq!(bytes_of(&flow["back"]), from_browser);
    assert_eq!(flow["exists"], json!("NAME_EXISTS"));
    assert_eq!(flow["missing"], json!(["NOT_FOUND", 4]));
    assert_eq!(flow["wrong"], json!(["AUTH_FAILED", 3]));
    assert_eq!(flow["listed"][0]["name"], json!("from-browser"));
    assert_eq!(flow["afterLogout"], json!("SESSION_ENDED"));
    assert!(flow["userAfterLogout"].is_null(), "{flow}");
    // One account's state, pinned at the audit position the client verified last.
    let stored = flow["stored"].as_array().unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let last_event = flow["audit"]["events"].as_array().unwrap().last().unwrap()["seq"].clone();
    assert_eq!(stored[0]["user"], json!("alice"));
    assert_eq!(stored[0]["audit"]["seq"], last_event, "{}", stored[0]);
    assert_eq!(
        flow["audit"]["chainVerified"],
        json!(true),
        "{}",
        flow["audit"]
    );
    let kinds: Vec<&str> = flow["audit"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"store") && kinds.contains(&"retrieve"),
        "{kinds:?}"
    );

    // A page's own store; a password given as bytes is zeroed once taken; a state that says
    // the client saw further than the server now shows is a rollback (exit code 9's
    // meaning), caught at login.
    let own = run(
        &page,
        "const map = new Map();
         const store = { get: async (k) => map.has(k) ? map.get(k) : null,
                         put: async (k, v) => { map.set(k, v); } };
         const client = await ks.Client.connect(args.url, { store });
         const bytes = new TextEncoder().encode(args.password);
         const s = await client.login('alice', bytes);
         const zeroed = bytes.length > 0 && bytes.every((b) => b === 0);
         await s.list();
         await s.logout();
         const [[key, json]] = [...map.entries()];
         const pinned = JSON.parse(json).audit;
         const forged = JSON.parse(json);
         forged.audit.seq += 1000;
         map.set(key, JSON.stringify(forged));
         let rollback = null;
         try { const s2 = await client.login('alice', args.password); await s2.list(); }
         catch (e) { rollback = [e.code, e.exitCode]; }
         const kept = map.get(key) === JSON.stringify(forged);
         return { zeroed, pinned, entries: map.size, rollback, kept };",
        json!({ "url": url, "password": PASSWORD }),
    )
    .await;
    assert!(own.get("error").is_none(), "{own}");
    assert_eq!(own["zeroed"], json!(true));
    assert_eq!(own["entries"], json!(1));
    assert!(own["pinned"]["seq"].as_u64().unwrap() > 0, "{own}");
    assert_eq!(own["rollback"], json!(["ROLLBACK", 9]), "{own}");
    assert_eq!(
        own["kept"],
        json!(true),
        "a caught server must not overwrite the state"
    );

    // Stored in the browser, retrieved byte for byte by the CLI; and the other way.
    let out = cli
        .with_password(
            PASSWORD,
            &["retrieve", "--user", "alice", "--name", "from-browser"],
        )
        .ok();
    assert_eq!(out.stdout, from_browser);
    let from_cli = random_bytes(1000);
    let path = keyserver_tests::file(tmp.path(), "from-cli.bin", &from_cli);
    cli.with_password(
        PASSWORD,
        &[
            "store", "--user", "alice", "--name", "from-cli", "--file", &path,
        ],
    )
    .ok();
    let got = run(
        &page,
        "const client = await ks.Client.connect(args.url);
         window.session = await client.login('alice', args.password);
         const t0 = performance.now();
         const secret = await window.session.retrieve('from-cli');
         return { secret: Array.from(secret), ms: performance.now() - t0 };",
        json!({ "url": url, "password": PASSWORD }),
    )
    .await;
    assert!(got.get("error").is_none(), "{got}");
    assert_eq!(bytes_of(&got["secret"]), from_cli);

    // The CLI changes the password: the browser's open session is refused, the old password
    // too; the new one logs in, and the secrets are there.
    let out = cli.run(
        &["change-password", "--user", "alice"],
        Some(PASSWORD),
        &[("KEYSERVER_NEW_PASSWORD", "the new password")],
        b"",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let after = run(
        &page,
        "let ended = null;
         try { await window.session.retrieve('from-cli'); } catch (e) { ended = [e.code, e.reason]; }
         const client = await ks.Client.connect(args.url);
         let old = null;
         try { await client.login('alice', args.password); } catch (e) { old = e.code; }
         const s = await client.login('alice', 'the new password');
         const secret = await s.retrieve('from-browser');
         return { ended, old, secret: Array.from(secret) };",
        json!({ "url": url, "password": PASSWORD }),
    )
    .await;
    assert!(after.get("error").is_none(), "{after}");
    assert_eq!(after["ended"], json!(["ERROR", "SESSION_ENDED"]), "{after}");
    assert_eq!(after["old"], json!("AUTH_FAILED"));
    assert_eq!(bytes_of(&after["secret"]), from_browser);

    // Keys the server holds, from the browser: made, used, exported, imported, deleted; the
    // signature verifies under WebCrypto and the CLI sees the same public key.
    let keys = run(
        &page,
        "const client = await ks.Client.connect(args.url);
         const s = await client.login('alice', args.password);
         const made = await s.generateKey('browser-key', 'ed25519', true);
         const msg = new TextEncoder().encode('pay 1 to bob');
         const sig = await s.sign('browser-key', msg);
         const pub = await crypto.subtle.importKey('raw', made.publicKey, { name: 'Ed25519' }, false, ['verify']);
         const verified = await crypto.subtle.verify({ name: 'Ed25519' }, pub, sig, msg);
         const exported = await s.exportKey('browser-key', args.password);
         const copy = Array.from(exported);
         const imported = await s.importKey('browser-copy', 'ed25519', exported, false);
         const zeroed = exported.every((b) => b === 0);
         const names = (await s.listKeys()).map((k) => k.name).sort();
         await s.deleteKey('browser-copy', args.password);
         const left = (await s.listKeys()).map((k) => k.name);
         await s.logout();
         return { publicKey: Array.from(made.publicKey), sameImported:
                    Array.from(imported.publicKey).join() === Array.from(made.publicKey).join(),
                  verified, sigLen: sig.length, exportedLen: copy.length, zeroed, names, left };",
        json!({ "url": url, "password": "the new password" }),
    )
    .await;
    assert!(keys.get("error").is_none(), "{keys}");
    assert_eq!(keys["verified"], json!(true), "{keys}");
    assert_eq!(keys["sigLen"], json!(64));
    assert_eq!(keys["exportedLen"], json!(32));
    assert_eq!(keys["sameImported"], json!(true));
    assert_eq!(
        keys["zeroed"],
        json!(true),
        "an imported key's bytes are zeroed once taken"
    );
    assert_eq!(keys["names"], json!(["browser-copy", "browser-key"]));
    assert_eq!(keys["left"], json!(["browser-key"]));
    let public = cli
        .with_password(
            "the new password",
            &["keys", "public", "--user", "alice", "--name", "browser-key"],
        )
        .ok()
        .text();
    let hex_pk: String = bytes_of(&keys["publicKey"])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(public.trim_end(), hex_pk);

    // The same steps by the CLI on this machine, for the figures in BENCHMARKS.md.
    let timed = |args: &[&str], pw: &str| {
        let t = std::time::Instant::now();
        cli.with_password(pw, args).ok();
        t.elapsed().as_secs_f64() * 1000.0
    };
    let cli_register = timed(&["register", "--user", "bob"], PASSWORD);
    let cli_retrieve = timed(
        &["retrieve", "--user", "alice", "--name", "from-cli"],
        "the new password",
    );
    let wasm = std::fs::metadata(&pkg).unwrap().len();
    // The key-stretching function alone, as every login runs it, in Chromium: the median of 5.
    let ksf = run(
        &page,
        "const times = [];
         for (let i = 0; i < 5; i++) { const t = performance.now(); ks.stretchOnce(); times.push(performance.now() - t); }
         times.sort((a, b) => a - b);
         return times[2];",
        json!({}),
    )
    .await;
    assert!(ksf.as_f64().is_some_and(|ms| ms > 0.0), "{ksf}");
    let ms = &flow["ms"];
    let _ = writeln!(
        std::io::stderr(),
        "BROWSER FIGURES: wasm {} bytes; Chromium headless: argon2id (m=64 MiB, t=3, p=4) {:.0} ms \
         (median of 5); register {:.0} ms (connect \
         + argon2 + 2 round trips), login {:.0} ms, store {:.1} ms, retrieve {:.1} ms (in a \
         session; {:.1} ms the second time); CLI process: register {cli_register:.0} ms, \
         retrieve {cli_retrieve:.0} ms (connect + login + retrieve + logout)",
        wasm,
        ksf.as_f64().unwrap_or(f64::NAN),
        ms["register"].as_f64().unwrap_or(f64::NAN),
        ms["login"].as_f64().unwrap_or(f64::NAN),
        ms["store"].as_f64().unwrap_or(f64::NAN),
        ms["retrieve"].as_f64().unwrap_or(f64::NAN),
        got["ms"].as_f64().unwrap_or(f64::NAN),
    );
    page.close().await.unwrap();
}
