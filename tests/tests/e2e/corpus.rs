#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! Writes the fuzzers' seed corpora from real traffic: a real server, real OPAQUE flows,
//! real sealed requests. Run it when the protocol changes and commit the result:
//!
//! ```text
//! cargo test -p keyserver-tests --test e2e corpus -- --ignored
//! ```

use std::path::{Path, PathBuf};

use keyserver_protocol::{
    OpRequest, Request, Response, SecretBytes, SecretName, UserName, codec::Bytes, frame,
    handshake::login, ops, session::ClientChannel, suite::KsfParams,
};
use keyserver_tests::Server;
use local_client::{ClientConfig, Connection, connect::QuicLink};
use rand::rngs::OsRng;

fn corpus_dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus_dir(target).join(name), bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes fuzz/corpus; run on purpose"]
async fn write_seed_corpora_from_real_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let mut cfg = ClientConfig::new(&server.addr, &server.data_dir.join("ca.pem")).unwrap();
    cfg.ksf(KsfParams::INSECURE_TEST_ONLY);
    let conn = Connection::connect(&cfg).await.unwrap();
    let user = UserName::new("corpus").unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    conn.register(&user, &pw).await.unwrap();

    let ca = local_client::connect::load_ca(&server.data_dir.join("ca.pem")).unwrap();
    let link = QuicLink::connect(
        server.addr.parse().unwrap(),
        "localhost",
        local_client::connect::tls_config(&ca).unwrap(),
    )
    .await
    .unwrap();
    let mut n = 0;
    let mut exchange = |req: &Request, resp: &[u8]| {
        n += 1;
        let r = req.encode();
        write("envelope", &format!("request-{n}"), &r);
        write("envelope", &format!("response-{n}"), resp);
        write("frame", &format!("frame-{n}"), &frame::encode(n, &r));
        write("sealed_request", &format!("request-{n}"), &r);
        write(
            "handshake",
            &format!("request-{n}"),
            &r[r.len().saturating_sub(96)..],
        );
    };

    let (flow, ke1) = login::start(&mut OsRng, &user, &pw).unwrap();
    write("handshake", "ke1", ke1.as_slice());
    let req = Request::LoginStart {
        user: user.clone(),
        message: ke1,
    };
    let resp = link.call(&req.encode()).await.unwrap();
    exchange(&req, &resp);
    let Response::LoginStarted { handshake, message } = Response::decode(&resp).unwrap() else {
        panic!()
    };
    let fin = flow
        .finish(
            &mut OsRng,
            &pw,
            message.as_slice(),
            KsfParams::INSECURE_TEST_ONLY,
        )
        .unwrap();
    write("handshake", "ke3", fin.message.as_slice());
    let req = Request::LoginFinish {
        handshake,
        message: fin.message,
    };
    let resp = link.call(&req.encode()).await.unwrap();
    exchange(&req, &resp);
    let Response::LoggedIn {
        sealed_storage_key,
        epoch,
        ..
    } = Response::decode(&resp).unwrap()
    else {
        panic!()
    };
    write("sealed_blobs", "storage-key", sealed_storage_key.as_slice());
    let channel = ClientChannel::new(fin.session).unwrap();
    let storage_key = fin
        .master_key
        .open_storage_key(&user, epoch, sealed_storage_key.as_slice())
        .unwrap();
    let name = SecretName::new("wallet").unwrap();
    let sealed = storage_key
        .seal_secret(
            &mut OsRng,
            &user,
            &name,
            1,
            &SecretBytes::new(b"seed".to_vec()),
        )
        .unwrap();
    write("sealed_blobs", "secret", &sealed);
    let tag = storage_key.name_tag(&name);
    let sealed_name = storage_key.seal_name(&mut OsRng, &user, &name);
    write("sealed_blobs", "name", &sealed_name);
    let ops = [
        OpRequest::Store(ops::Store {
            tag,
            sealed_name: Bytes::new(sealed_name).unwrap(),
            version: 1,
            replace: false,
            sealed: Bytes::new(sealed).unwrap(),
        }),
        OpRequest::Retrieve(ops::Retrieve { tag }),
        OpRequest::List(ops::List {
            after: None,
            deleted: true,
        }),
        OpRequest::Audit(ops::Audit { after: 0 }),
        OpRequest::Checkpoints,
        OpRequest::Delete(ops::Delete { tag }),
        OpRequest::Logout,
    ];
    for (i, op) in ops.iter().enumerate() {
        write("op", &format!("request-{i}"), &op.encode());
        let sealed = channel.seal_request(&op.encode()).unwrap();
        let seq = sealed.seq;
        let req = Request::Sealed(sealed);
        let resp = link.call(&req.encode()).await.unwrap();
        exchange(&req, &resp);
        if let Response::Sealed(r) = Response::decode(&resp).unwrap() {
            let plain = channel.open_response(seq, &r).unwrap();
            write("op", &format!("response-{i}"), &plain);
            if let Ok(ops::OpAnswer {
                response: keyserver_protocol::OpResponse::Audit(page),
                ..
            }) = ops::OpAnswer::decode(&plain)
            {
                write(
                    "audit_chain",
                    "events",
                    &keyserver_protocol::codec::encode(&page.events),
                );
            }
        }
    }
    write("config", "template", keyserver::config::TEMPLATE.as_bytes());
}
