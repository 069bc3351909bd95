#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests: a panic is how a test fails"
)]
//! Online guessing, enumeration and misuse of sealed requests, through the real binaries.

use std::time::Duration;

use keyserver_protocol::{
    ErrorCode, OpRequest, Request, Response, SecretBytes, UserName,
    handshake::login,
    session::{ClientChannel, SessionId},
    suite::KsfParams,
};
use keyserver_tests::{Server, init_data_dir};
use local_client::connect::QuicLink;
use rand::rngs::OsRng;

fn server_with(config: &str) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init_data_dir(&data);
    std::fs::write(data.join("keyserver.toml"), config).unwrap();
    let server = Server::start(&data, &[]);
    (tmp, server)
}

#[test]
fn wrong_passwords_lock_the_account_the_lockout_ends_and_a_success_resets_the_count() {
    let (_tmp, server) = server_with("max_failed_logins = 3\nlockout_base_secs = 2\n");
    let c = server.client();
    c.with_password("right", &["register", "--user", "alice"])
        .ok();
    for _ in 0..3 {
        assert_eq!(
            c.with_password("wrong", &["list", "--user", "alice"]).code,
            3
        );
    }
    let locked = c.with_password("right", &["list", "--user", "alice"]);
    assert_eq!(locked.code, 5, "{locked:?}");
    assert!(locked.stderr.contains("try again in"), "{}", locked.stderr);
    std::thread::sleep(Duration::from_millis(2100));
    c.with_password("right", &["list", "--user", "alice"]).ok();
    // The success reset the count: two more failures do not lock.
    for _ in 0..2 {
        assert_eq!(
            c.with_password("wrong", &["list", "--user", "alice"]).code,
            3
        );
    }
    c.with_password("right", &["list", "--user", "alice"]).ok();
    let doc = c
        .with_password("right", &["audit", "--user", "alice", "--json"])
        .ok()
        .json();
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"login_locked") && kinds.contains(&"login_failed"),
        "{kinds:?}"
    );
}

async fn link(server: &Server) -> QuicLink {
    let ca = local_client::connect::load_ca(&server.data_dir.join("ca.pem")).unwrap();
    QuicLink::connect(
        server.addr.parse().unwrap(),
        "localhost",
        local_client::connect::tls_config(&ca).unwrap(),
    )
    .await
    .unwrap()
}

/// Sends LoginStart only, as a client that tests a password from the first reply and
/// walks away. Returns the reply's bytes.
async fn login_start_only(link: &QuicLink, user: &str) -> Vec<u8> {
    let (_, ke1) = login::start(
        &mut OsRng,
        &UserName::new(user).unwrap(),
        &SecretBytes::new(b"guess".to_vec()),
    )
    .unwrap();
    link.call(
        &Request::LoginStart {
            user: UserName::new(user).unwrap(),
            message: ke1,
        }
        .encode(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_abandoned_after_the_first_reply_count_and_unknown_names_lock_alike() {
    let (_tmp, server) = server_with("max_failed_logins = 3\n");
    let c = server.client();
    c.with_password("right", &["register", "--user", "alice"])
        .ok();
    let l = link(&server).await;
    let mut real_sizes = Vec::new();
    let mut fake_sizes = Vec::new();
    for _ in 0..3 {
        let real = login_start_only(&l, "alice").await;
        let fake = login_start_only(&l, "nobody").await;
        assert!(matches!(
            Response::decode(&real).unwrap(),
            Response::LoginStarted { .. }
        ));
        assert!(matches!(
            Response::decode(&fake).unwrap(),
            Response::LoginStarted { .. }
        ));
        real_sizes.push(real.len());
        fake_sizes.push(fake.len());
    }
    assert_eq!(
        real_sizes, fake_sizes,
        "replies for a real and an unknown user differ in size"
    );
    // Three abandoned logins: the fourth is refused, for the real and the unknown name alike.
    let real = Response::decode(&login_start_only(&l, "alice").await).unwrap();
    let fake = Response::decode(&login_start_only(&l, "nobody").await).unwrap();
    let (Response::Error(r), Response::Error(f)) = (&real, &fake) else {
        panic!("{real:?} {fake:?}")
    };
    assert_eq!(
        (r.code, f.code),
        (ErrorCode::ACCOUNT_LOCKED, ErrorCode::ACCOUNT_LOCKED)
    );
    assert_eq!(real.encode().len(), fake.encode().len());
    let out = c.with_password("right", &["list", "--user", "alice"]);
    assert_eq!(out.code, 5, "{out:?}");
    let out = c.with_password("right", &["list", "--user", "nobody"]);
    assert_eq!(out.code, 5, "{out:?}");
}

async fn raw_session(l: &QuicLink, user: &str) -> ClientChannel {
    let u = UserName::new(user).unwrap();
    let pw = SecretBytes::new(b"pw".to_vec());
    let (flow, ke1) = login::start(&mut OsRng, &u, &pw).unwrap();
    let r = Response::decode(
        &l.call(
            &Request::LoginStart {
                user: u.clone(),
                message: ke1,
            }
            .encode(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let Response::LoginStarted { handshake, message } = r else {
        panic!("{r:?}")
    };
    let fin = flow
        .finish(&mut OsRng, &pw, message.as_slice(), KsfParams::default())
        .unwrap();
    let r = Response::decode(
        &l.call(
            &Request::LoginFinish {
                handshake,
                message: fin.message,
            }
            .encode(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(r, Response::LoggedIn { .. }), "{r:?}");
    ClientChannel::new(&fin.session)
}

async fn code_of(l: &QuicLink, req: &Request) -> Option<ErrorCode> {
    match Response::decode(&l.call(&req.encode()).await.unwrap()).unwrap() {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misused_sealed_requests_get_distinct_refusals() {
    let (_tmp, server) = server_with("session_idle_timeout_secs = 2\n");
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let l = link(&server).await;
    let ch = raw_session(&l, "alice").await;
    let list = OpRequest::List { after: None }.encode();

    // Replayed: the same read twice.
    let r1 = Request::Sealed(ch.seal_request(&list).unwrap());
    assert_eq!(code_of(&l, &r1).await, None);
    assert_eq!(code_of(&l, &r1).await, Some(ErrorCode::REPLAYED));
    // Reordered beyond the window: seq 2 sealed now, sent after 1,100 newer ones.
    let old = Request::Sealed(ch.seal_request(&list).unwrap());
    let mut newest = None;
    for _ in 0..1100 {
        newest = Some(ch.seal_request(&list).unwrap());
    }
    assert_eq!(code_of(&l, &Request::Sealed(newest.unwrap())).await, None);
    assert_eq!(code_of(&l, &old).await, Some(ErrorCode::REPLAYED));
    // A wrong session id.
    let Request::Sealed(mut wrong) = Request::Sealed(ch.seal_request(&list).unwrap()) else {
        unreachable!()
    };
    wrong.session_id = SessionId([0xEE; 16]);
    assert_eq!(
        code_of(&l, &Request::Sealed(wrong)).await,
        Some(ErrorCode::UNKNOWN_SESSION)
    );
    // Altered ciphertext.
    let Request::Sealed(mut bad) = Request::Sealed(ch.seal_request(&list).unwrap()) else {
        unreachable!()
    };
    let mut body = bad.body.into_vec();
    body[3] ^= 0x40;
    bad.body = keyserver_protocol::codec::Bytes::new(body).unwrap();
    assert_eq!(
        code_of(&l, &Request::Sealed(bad)).await,
        Some(ErrorCode::BAD_SEAL)
    );

    // After expiry (idle timeout 2 s).
    let idle = raw_session(&l, "alice").await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let r = Request::Sealed(idle.seal_request(&list).unwrap());
    assert_eq!(code_of(&l, &r).await, Some(ErrorCode::SESSION_EXPIRED));

    // After logout.
    let ch = raw_session(&l, "alice").await;
    let out = Request::Sealed(ch.seal_request(&OpRequest::Logout.encode()).unwrap());
    assert_eq!(code_of(&l, &out).await, None);
    let r = Request::Sealed(ch.seal_request(&list).unwrap());
    assert_eq!(code_of(&l, &r).await, Some(ErrorCode::UNKNOWN_SESSION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_handshakes_gets_slow_down_while_another_logs_in() {
    // No lockout here: the flood's guesses at "victim" would lock that name after 10, and
    // this test is about the rate limit alone.
    let (_tmp, server) = server_with(
        "handshakes_per_second_per_address = 5\nhandshake_burst_per_address = 10\nmax_failed_logins = 1000\n",
    );
    let c = server.client();
    c.with_password("pw", &["register", "--user", "alice"]).ok();
    let ca = local_client::connect::load_ca(&server.data_dir.join("ca.pem")).unwrap();
    let tls = local_client::connect::tls_config(&ca).unwrap();
    // The flood comes from 127.0.0.2; the legitimate client from 127.0.0.1.
    let flood = QuicLink::connect_from(
        "127.0.0.2:0".parse().unwrap(),
        server.addr.parse().unwrap(),
        "localhost",
        tls,
    )
    .await
    .unwrap();
    let flooder = tokio::spawn(async move {
        let mut slow_down = 0;
        for _ in 0..200 {
            let r = Response::decode(&login_start_only(&flood, "victim").await).unwrap();
            if let Response::Error(e) = r {
                assert_eq!(e.code, ErrorCode::SLOW_DOWN);
                assert!(e.retry_after_secs.is_some());
                slow_down += 1;
            }
        }
        slow_down
    });
    let mut ok = 0;
    for _ in 0..5 {
        let c = c.clone();
        let out = tokio::task::spawn_blocking(move || {
            c.with_password("pw", &["list", "--user", "alice"])
        })
        .await
        .unwrap();
        assert_eq!(out.code, 0, "{out:?}");
        ok += 1;
    }
    let refused = flooder.await.unwrap();
    assert!(
        refused >= 150,
        "only {refused} of 200 flooding handshakes were refused"
    );
    assert_eq!(ok, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_cannot_pile_up_sessions() {
    let (_tmp, server) = server_with("max_sessions_per_account = 2\n");
    server
        .client()
        .with_password("pw", &["register", "--user", "alice"])
        .ok();
    let l = link(&server).await;
    let first = raw_session(&l, "alice").await;
    let _second = raw_session(&l, "alice").await;
    let out = server
        .client()
        .with_password("pw", &["list", "--user", "alice"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("slow down"), "{}", out.stderr);
    // Logging one out makes room.
    let bye = Request::Sealed(first.seal_request(&OpRequest::Logout.encode()).unwrap());
    assert_eq!(code_of(&l, &bye).await, None);
    server
        .client()
        .with_password("pw", &["list", "--user", "alice"])
        .ok();
}
