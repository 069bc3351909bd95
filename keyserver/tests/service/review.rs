//! The properties a security review asked for that are not about one operation: no nonce
//! sealed twice, sessions that junk cannot keep alive, stored sessions bound to their row,
//! no free OPRF evaluations, no free guesses, lookups that cost a rate, and a login start
//! never sent twice behind the user's back.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use keyserver::{config::Config, service::Core};
use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, Request, Response, SealedRequest,
    codec::Bytes,
    handshake::{login, registration},
    ops::Audit,
    session::{SessionId, channel::RESPONSE_NONCE_LEN},
};
use local_client::{ClientError, Connection, Connector, Link, LinkError};
use rand::rngs::OsRng;

use crate::{harness::*, on_every_backend};

/// The ciphertext part of a sealed response body (after its nonce, before its tag).
fn ciphertext(body: &[u8]) -> &[u8] {
    &body[RESPONSE_NONCE_LEN..body.len() - 16]
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

on_every_backend! {
    /// A captured read sent again to an instance that holds the session with a fresh
    /// window (another instance, or this one after a restart) is run again and its new
    /// answer sealed for the same seq. Sealed under one key and nonce, the two answers'
    /// ciphertexts would differ exactly as their plaintexts do (the keystream cancels
    /// out): they must not.
    async fn two_answers_to_one_request_are_never_sealed_under_one_nonce(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.raw().login("alice", "pw").await.unwrap();
        let captured = a.seal(&OpRequest::Audit(Audit { after: 0 }));
        let send = |core: &Arc<Core>, req: &SealedRequest| {
            let raw = Raw::new(core, LOCALHOST);
            let req = req.clone();
            async move {
                match raw.send(&Request::Sealed(req)).await {
                    Response::Sealed(r) => r,
                    other => panic!("{other:?}"),
                }
            }
        };
        let first = send(&s.core, &captured).await;
        // The account's log grows, so a run of the same read answers something else.
        s.login("alice", "pw").await.unwrap().store(&secret("w"), &pw("x"), false).await.unwrap();
        let answers = [
            first,
            send(&s.instance(), &captured).await,
            send(&s.instance(), &captured).await,
        ];
        let plain: Vec<Vec<u8>> = answers
            .iter()
            .map(|r| a.channel.open_response(captured.seq, r).unwrap())
            .collect();
        assert_ne!(plain[0], plain[1], "the test needs two different answers");
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            let (bi, bj) = (answers[i].body.as_slice(), answers[j].body.as_slice());
            assert_ne!(bi[..RESPONSE_NONCE_LEN], bj[..RESPONSE_NONCE_LEN]);
            let n = plain[i].len().min(plain[j].len());
            assert_ne!(
                xor(&ciphertext(bi)[..n], &ciphertext(bj)[..n]),
                xor(&plain[i][..n], &plain[j][..n]),
                "answers {i} and {j} share a keystream"
            );
        }
    }
}

on_every_backend! {
    /// The first requests of a session at an instance that does not hold it yet race to
    /// take it in: they end with one session and one window, so one sequence number is
    /// accepted once.
    async fn first_requests_racing_into_an_instance_share_one_replay_window(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.raw().login("alice", "pw").await.unwrap();
        for round in 0..5 {
            let fresh = s.instance();
            let req = a.seal(&list_op());
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let raw = Raw::new(&fresh, LOCALHOST);
                    let req = req.clone();
                    tokio::spawn(async move { raw.send(&Request::Sealed(req)).await })
                })
                .collect();
            let mut accepted = 0;
            for t in tasks {
                match t.await.unwrap() {
                    Response::Sealed(_) => accepted += 1,
                    Response::Error(e) => assert_eq!(e.code, ErrorCode::REPLAYED),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(accepted, 1, "round {round}");
            assert_eq!(fresh.open_sessions(), 1);
        }
    }
}

on_every_backend! {
    /// Liveness moves only once a request authenticates: junk sent under a known session id
    /// every few seconds, to the instance that holds it or to another, does not keep it
    /// alive past its idle timeout.
    async fn unauthenticated_traffic_never_keeps_a_session_alive(kind: Kind) {
        let config = Config { session_idle_timeout_secs: 30, ..Config::default() };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let a = s.raw().login("alice", "pw").await.unwrap();
        let junk = SealedRequest {
            session_id: a.channel.id(),
            seq: 1_000_000,
            body: Bytes::new(vec![0x42; 64]).unwrap(),
        };
        for _ in 0..15 {
            s.advance(Duration::from_secs(3));
            for core in [s.core.clone(), s.instance()] {
                // Refused as junk while the session lives, then as expired: never run.
                let r = Raw::new(&core, LOCALHOST).send(&Request::Sealed(junk.clone())).await;
                assert!(
                    matches!(&r, Response::Error(e) if e.code == ErrorCode::BAD_SEAL
                        || e.code == ErrorCode::SESSION_EXPIRED),
                    "{r:?}"
                );
            }
        }
        // 45 s without an authenticated request: ended, here and anywhere else.
        assert_eq!(a.op(&list_op()).await, Err(ErrorCode::SESSION_EXPIRED));
        let elsewhere = RawSession { raw: Raw::new(&s.instance(), LOCALHOST), ..a };
        assert_eq!(
            elsewhere.op(&list_op()).await,
            Err(ErrorCode::SESSION_EXPIRED)
        );
    }
}

on_every_backend! {
    /// A database writer who points a stored session at another account, or makes it
    /// younger (to extend its life), gets a session no instance takes over.
    async fn a_stored_session_changed_behind_the_servers_back_is_refused(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        s.register("bob", "pw").await;
        for (sqlite, postgres) in [
            (
                "UPDATE sessions SET account_id = (SELECT id FROM accounts WHERE user_name = 'bob')",
                "UPDATE sessions SET account_id = (SELECT id FROM accounts WHERE user_name = 'bob')",
            ),
            (
                "UPDATE sessions SET created_at = created_at + 3600",
                "UPDATE sessions SET created_at = created_at + 3600",
            ),
        ] {
            s.sql("DELETE FROM sessions", "DELETE FROM sessions").await;
            let a = s.raw().login("alice", "pw").await.unwrap();
            s.sql(sqlite, postgres).await;
            let moved = RawSession { raw: Raw::new(&s.instance(), LOCALHOST), ..a };
            assert_eq!(
                moved.op(&list_op()).await,
                Err(ErrorCode::UNKNOWN_SESSION),
                "{sqlite}"
            );
        }
    }
}

on_every_backend! {
    /// The OPRF key of an account comes from its own random credential identifier: what a
    /// registration start for a free name evaluates is not what a login evaluates once the
    /// name is registered, so guesses cannot be precomputed uncounted.
    async fn a_registration_start_for_a_free_name_gives_no_evaluation_under_its_future_key(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        let raw = s.raw();
        let (_, blinded) = registration::start(&mut OsRng, &name_of("alice"), &pw("guess")).unwrap();
        let early = match raw
            .send(&Request::RegisterStart { user: name_of("alice"), message: blinded.clone() })
            .await
        {
            Response::RegisterStarted { message, .. } => message.into_vec(),
            other => panic!("{other:?}"),
        };
        s.register("alice", "the real one").await;
        // A login whose KE1 carries the same blinded element.
        let (_, ke1) = login::start(&mut OsRng, &name_of("alice"), &pw("guess")).unwrap();
        let mut ke1 = ke1.into_vec();
        ke1[..32].copy_from_slice(blinded.as_slice());
        let late = match raw
            .send(&Request::LoginStart { user: name_of("alice"), message: Bytes::new(ke1).unwrap() })
            .await
        {
            Response::LoginStarted { message, .. } => message.into_vec(),
            other => panic!("{other:?}"),
        };
        // Both replies begin with the evaluated element.
        assert_ne!(early[..32], late[..32]);
    }
}

on_every_backend! {
    /// Only a well-formed login start counts a guess: junk cannot lock an account.
    async fn malformed_login_starts_cost_no_guess(kind: Kind) {
        let config = Config { max_failed_logins: 3, ..Config::default() };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let raw = s.raw();
        for len in [0usize, 1, 95, 96, 97, 200] {
            for fill in [0u8, 0xff] {
                let r = raw
                    .send(&Request::LoginStart {
                        user: name_of("alice"),
                        message: Bytes::new(vec![fill; len]).unwrap(),
                    })
                    .await;
                assert!(matches!(&r, Response::Error(e) if e.code == ErrorCode::MALFORMED), "{r:?}");
            }
        }
        let g = s
            .storage
            .read(|tx| Box::pin(async move { Ok(tx.account_by_name(&name_of("alice")).await?.unwrap().guesses) }))
            .await
            .unwrap();
        assert_eq!(g.failed, 0);
        s.login("alice", "pw").await.unwrap();
    }
}

on_every_backend! {
    /// A failed login does the same durable work for an unknown name as for a real one, on
    /// every path: a wrong password (the client aborts), an abandoned login, a bad KE3.
    async fn failed_logins_of_real_and_unknown_names_cost_the_same_transactions(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "right").await;
        let mut costs = Vec::new();
        for user in ["alice", "nobody"] {
            let before = s.transactions();
            // Wrong password: LoginStart, then LoginAbort.
            assert!(s.login(user, "wrong").await.is_err());
            // A bad KE3.
            let raw = s.raw();
            let (_, handshake, _) = raw.login_start(user, "wrong").await.unwrap();
            let r = raw
                .send(&Request::LoginFinish { handshake, message: Bytes::new(vec![1; 64]).unwrap() })
                .await;
            assert!(matches!(&r, Response::Error(e) if e.code == ErrorCode::AUTH_FAILED), "{r:?}");
            // Abandoned: expires, swept.
            raw.login_start(user, "wrong").await.unwrap();
            s.advance(Duration::from_secs(31));
            s.core.sweep().await;
            let after = s.transactions();
            costs.push((after.0 - before.0, after.1 - before.1));
        }
        assert_eq!(costs[0], costs[1], "(reads, writes) for a real and an unknown name");
    }
}

on_every_backend! {
    /// Each request under a session id this instance does not hold costs a database lookup:
    /// ids found missing are remembered, and new ones cost a rate per address.
    async fn requests_under_unknown_session_ids_cost_a_bounded_rate_of_lookups(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        let raw = s.raw();
        let junk = |id: u8, seq| Request::Sealed(SealedRequest {
            session_id: SessionId([id; 16]),
            seq,
            body: Bytes::new(vec![0; 40]).unwrap(),
        });
        // One id, many times: one lookup.
        let (reads, _) = s.transactions();
        for seq in 1..=50 {
            let r = raw.send(&junk(7, seq)).await;
            assert!(matches!(&r, Response::Error(e) if e.code == ErrorCode::UNKNOWN_SESSION));
        }
        assert_eq!(s.transactions().0 - reads, 1);
        // Many ids from one address: the burst (200), then SLOW_DOWN, no lookup.
        let (reads, _) = s.transactions();
        let mut slowed = 0;
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let req = Request::Sealed(SealedRequest {
                session_id: SessionId(id),
                seq: 1,
                body: Bytes::new(vec![0; 40]).unwrap(),
            });
            if let Response::Error(e) = raw.send(&req).await
                && e.code == ErrorCode::SLOW_DOWN
            {
                slowed += 1;
            }
        }
        let looked_up = s.transactions().0 - reads;
        assert!(looked_up <= 200, "{looked_up} lookups");
        assert_eq!(looked_up + slowed, 1000);
        // Another address is not slowed by it.
        let other = Raw::new(&s.core, IpAddr::from([127, 0, 0, 9]));
        let r = other.send(&junk(9, 1)).await;
        assert!(matches!(&r, Response::Error(e) if e.code == ErrorCode::UNKNOWN_SESSION));
    }
}

/// A link that loses the connection once, right after the server got a `LoginStart`.
#[derive(Debug, Clone)]
struct DropsLoginStart {
    core: Arc<Core>,
    dropped: Arc<AtomicBool>,
}

#[async_trait]
impl Link for DropsLoginStart {
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError> {
        let reply = self.core.handle(request, LOCALHOST).await;
        let is_start = matches!(Request::decode(request), Ok(Request::LoginStart { .. }));
        if is_start && !self.dropped.swap(true, Ordering::Relaxed) {
            return Err(LinkError::Lost("connection reset".into()));
        }
        Ok(reply)
    }

    fn close(&self) {}
}

#[async_trait]
impl Connector for DropsLoginStart {
    async fn connect(&self) -> Result<Arc<dyn Link>, ClientError> {
        Ok(Arc::new(self.clone()))
    }
}

on_every_backend! {
    /// A lost connection during a login start is reported, not answered by sending the
    /// start again: each copy would count a guess.
    async fn a_login_start_is_never_sent_twice_behind_the_users_back(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let link = DropsLoginStart { core: s.core.clone(), dropped: Arc::new(AtomicBool::new(false)) };
        let conn = Connection::with_connector(Arc::new(link), KSF).await.unwrap();
        let r = conn.login(&name_of("alice"), &pw("pw")).await;
        assert!(matches!(r, Err(ClientError::Unreachable(_))), "{r:?}");
        let g = s
            .storage
            .read(|tx| Box::pin(async move { Ok(tx.account_by_name(&name_of("alice")).await?.unwrap().guesses) }))
            .await
            .unwrap();
        assert_eq!(g.failed, 1, "one attempt, one guess");
        // The next login (the user's own retry) goes through.
        conn.login(&name_of("alice"), &pw("pw")).await.unwrap();
        let _ = OpResponse::LoggedOut;
    }
}

/// On Postgres, a write job waiting for its account's lock holds a pooled connection: one
/// account's many requests in flight must not hold them all (anyone can register an
/// account), so an instance sends at most two of an account's jobs at once and keeps the
/// rest waiting in memory. The other accounts' writes go on meanwhile.
#[tokio::test]
async fn one_accounts_many_requests_hold_at_most_two_database_connections() {
    let Some(s) = Server::new(Kind::Postgres, Config::default()).await else {
        return;
    };
    s.register("alice", "pw").await;
    s.register("bob", "pw").await;
    let a = s.raw().login("alice", "pw").await.unwrap();
    let b = s.login("bob", "pw").await.unwrap();
    s.counts.most_in_flight.store(0, Ordering::SeqCst);
    let mut jobs = tokio::task::JoinSet::new();
    for i in 0..48 {
        let a = a.clone();
        jobs.spawn(async move {
            let name = format!("s{i}");
            let op = a.store_op(&name, 1, b"x", false);
            a.op(&op).await
        });
    }
    // Bob is served while Alice's requests queue.
    b.store(&secret("bob's"), &pw("y"), false).await.unwrap();
    while let Some(r) = jobs.join_next().await {
        assert!(matches!(r.unwrap(), Ok(OpResponse::Stored(_))));
    }
    let most = s.counts.most_in_flight.load(Ordering::SeqCst);
    // Alice's two, and Bob's one.
    assert!(most <= 3, "{most} write transactions at once");
}
