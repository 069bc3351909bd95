//! Online guessing: counted at login start, locked after the limit for a growing delay,
//! unknown names alike, and handshake floods slowed per address.

use std::{net::IpAddr, time::Duration};

use keyserver::{config::Config, storage::Guesses};
use keyserver_protocol::{ErrorCode, Request, Response, audit_chain::EventKind};
use local_client::ClientError;

use crate::{harness::*, on_every_backend};

fn three_guesses() -> Config {
    Config {
        max_failed_logins: 3,
        lockout_base_secs: 60,
        lockout_max_secs: 600,
        ..Config::default()
    }
}

async fn guesses(s: &Server, user: &str) -> Guesses {
    let u = name_of(user);
    s.storage
        .read(move |tx| Box::pin(async move { Ok(tx.account_by_name(&u).await?.unwrap().guesses) }))
        .await
        .unwrap()
}

fn locked_for(r: Result<local_client::Session, ClientError>) -> Option<u64> {
    match r {
        Err(ClientError::Locked { retry_after_secs }) => retry_after_secs,
        other => panic!("expected a lockout, got {other:?}"),
    }
}

on_every_backend! {
    async fn wrong_passwords_lock_the_account_for_a_growing_delay_and_a_success_resets_the_count(kind: Kind) {
        let Some(s) = Server::new(kind, three_guesses()).await else { return };
        s.register("alice", "right").await;
        for _ in 0..3 {
            assert!(matches!(s.login("alice", "wrong").await, Err(ClientError::AuthFailed { .. })));
        }
        assert_eq!(guesses(&s, "alice").await.failed, 3);
        // Locked, even with the right password; a refused login does not move the count.
        s.advance(Duration::from_secs(1));
        assert_eq!(locked_for(s.login("alice", "right").await), Some(59));
        assert_eq!(guesses(&s, "alice").await.failed, 3);
        s.advance(Duration::from_secs(59));
        // The fourth failure doubles the lockout.
        assert!(matches!(s.login("alice", "wrong").await, Err(ClientError::AuthFailed { .. })));
        s.advance(Duration::from_secs(1));
        assert_eq!(locked_for(s.login("alice", "right").await), Some(119));
        s.advance(Duration::from_secs(119));
        s.login("alice", "right").await.unwrap();
        assert_eq!(guesses(&s, "alice").await.failed, 0);
        // The success reset the count: two more failures do not lock.
        for _ in 0..2 {
            assert!(matches!(s.login("alice", "wrong").await, Err(ClientError::AuthFailed { .. })));
        }
        let session = s.login("alice", "right").await.unwrap();
        let report = session.audit().await.unwrap();
        report.verification.unwrap();
        let count = |k| report.events.iter().filter(|e| e.body.kind == k).count();
        assert_eq!(count(EventKind::LoginLocked), 2);
        assert_eq!(count(EventKind::LoginFailed), 6);
    }
}

on_every_backend! {
    /// The reply to `LoginStart` alone lets a client test a password, so a login
    /// abandoned there counts; and unknown names are counted and locked out alike.
    async fn logins_abandoned_after_the_first_reply_count_and_unknown_names_lock_alike(kind: Kind) {
        let Some(s) = Server::new(kind, three_guesses()).await else { return };
        s.register("alice", "right").await;
        let raw = s.raw();
        let mut real_sizes = Vec::new();
        let mut fake_sizes = Vec::new();
        for _ in 0..3 {
            let (_, _, real) = raw.login_start("alice", "guess").await.unwrap();
            let (_, _, fake) = raw.login_start("nobody", "guess").await.unwrap();
            real_sizes.push(real.len());
            fake_sizes.push(fake.len());
        }
        assert_eq!(real_sizes, fake_sizes);
        let real = raw.login_start("alice", "guess").await.err();
        let fake = raw.login_start("nobody", "guess").await.err();
        assert_eq!((real, fake), (Some(ErrorCode::ACCOUNT_LOCKED), Some(ErrorCode::ACCOUNT_LOCKED)));
        assert!(matches!(s.login("alice", "right").await, Err(ClientError::Locked { .. })));
        assert!(matches!(s.login("nobody", "right").await, Err(ClientError::Locked { .. })));
        // Another unknown name has its own counter.
        assert!(raw.login_start("somebody", "guess").await.is_ok());
        // Once the lockout is over, the unknown name takes guesses again, and its stale
        // counter is purged in time.
        s.advance(Duration::from_secs(61));
        assert!(raw.login_start("nobody", "guess").await.is_ok());
    }
}

on_every_backend! {
    /// A failed login for an unknown name writes what one for a real account writes (an
    /// event, its head moved), on every path: a bad KE3, an abort, a lockout. The time a
    /// reply takes is `keyserver-bench --enumeration`'s to measure; the work is this.
    async fn every_failed_login_path_writes_the_same_rows_for_an_unknown_name(kind: Kind) {
        let Some(s) = Server::new(kind, three_guesses()).await else { return };
        s.register("alice", "right").await;
        let raw = s.raw();
        let real_before = s.count("SELECT COUNT(*) FROM audit_events").await;
        for user in ["alice", "nobody"] {
            let (_, handshake, _) = raw.login_start(user, "guess").await.unwrap();
            let bad_ke3 = keyserver_protocol::codec::Bytes::new(vec![0x17; 64]).unwrap();
            let r = raw.send(&Request::LoginFinish { handshake, message: bad_ke3 }).await;
            assert!(matches!(r, Response::Error(e)
                if e.code == ErrorCode::AUTH_FAILED && e.guesses_left == Some(2)));
            let (_, handshake, _) = raw.login_start(user, "guess").await.unwrap();
            let r = raw.send(&Request::LoginAbort { handshake }).await;
            assert_eq!(r, Response::LoginAborted { guesses_left: Some(1) });
            raw.login_start(user, "guess").await.unwrap();
            assert_eq!(raw.login_start(user, "guess").await.err(), Some(ErrorCode::ACCOUNT_LOCKED));
        }
        let real = s.count("SELECT COUNT(*) FROM audit_events").await - real_before;
        let unknown = s.count("SELECT COUNT(*) FROM unknown_events").await;
        // Started, failed; started, failed; started; locked.
        assert_eq!((real, unknown), (6, 6));
        let heads = s
            .count("SELECT COUNT(*) FROM unknown_logins WHERE events = 6 AND head IS NOT NULL")
            .await;
        assert_eq!(heads, 1);
    }
}

on_every_backend! {
    /// Logins refused while an account is locked cost the refused nothing, so only the
    /// first refusal of a lockout is written: nobody can grow an account's log (or an
    /// unknown name's stand-in chain) without bound.
    async fn refusals_during_one_lockout_are_logged_once(kind: Kind) {
        let Some(s) = Server::new(kind, three_guesses()).await else { return };
        s.register("alice", "right").await;
        let raw = s.raw();
        for user in ["alice", "nobody"] {
            for _ in 0..3 {
                raw.login_start(user, "guess").await.unwrap();
            }
        }
        let events = || async {
            (
                s.count("SELECT COUNT(*) FROM audit_events").await,
                s.count("SELECT COUNT(*) FROM unknown_events").await,
            )
        };
        let before = events().await;
        for _ in 0..20 {
            for user in ["alice", "nobody"] {
                let r = raw.login_start(user, "guess").await.err();
                assert_eq!(r, Some(ErrorCode::ACCOUNT_LOCKED));
            }
        }
        let after = events().await;
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
        // The next lockout's first refusal is logged again.
        s.advance(Duration::from_secs(61));
        for user in ["alice", "nobody"] {
            raw.login_start(user, "guess").await.unwrap();
            assert_eq!(raw.login_start(user, "guess").await.err(), Some(ErrorCode::ACCOUNT_LOCKED));
            assert_eq!(raw.login_start(user, "guess").await.err(), Some(ErrorCode::ACCOUNT_LOCKED));
        }
        let last = events().await;
        assert_eq!((last.0 - after.0, last.1 - after.1), (2, 2));
    }
}

on_every_backend! {
    /// A failed login says how many wrong guesses are left before the lockout, counted the
    /// same way for a name that does not exist: the count tells the two apart no more than
    /// the failure does. A reauth says it too.
    async fn wrong_passwords_for_a_real_and_an_unknown_name_count_down_alike(kind: Kind) {
        let Some(s) = Server::new(kind, three_guesses()).await else { return };
        s.register("alice", "right").await;
        let left = |r: Result<local_client::Session, ClientError>| match r {
            Err(ClientError::AuthFailed { guesses_left }) => guesses_left,
            other => panic!("{other:?}"),
        };
        for expected in [2, 1, 0] {
            let real = left(s.login("alice", "wrong").await);
            let unknown = left(s.login("nobody", "wrong").await);
            assert_eq!((real, unknown), (Some(expected), Some(expected)));
        }
        assert!(locked_for(s.login("alice", "wrong").await).is_some());
        assert!(locked_for(s.login("nobody", "wrong").await).is_some());
        // In a session: a wrong reauth counts down the account's guesses too.
        s.register("bob", "right").await;
        let bob = s.login("bob", "right").await.unwrap();
        for expected in [2, 1] {
            match bob.reauth(&pw("wrong")).await {
                Err(ClientError::AuthFailed { guesses_left }) => {
                    assert_eq!(guesses_left, Some(expected));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

on_every_backend! {
    async fn concurrent_logins_cannot_pass_the_limit(kind: Kind) {
        let Some(s) = Server::new(kind, three_guesses()).await else { return };
        s.register("alice", "right").await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let raw = s.raw();
                tokio::spawn(async move { raw.login_start("alice", "guess").await.is_ok() })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            if t.await.unwrap() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3);
        assert_eq!(guesses(&s, "alice").await.failed, 3);
    }
}

on_every_backend! {
    async fn one_address_flooding_handshakes_gets_slow_down_while_another_logs_in(kind: Kind) {
        // No lockout here: the flood's guesses at "victim" would lock that name, and this
        // test is about the rate limit alone.
        let config = Config {
            handshakes_per_second_per_address: 5,
            handshake_burst_per_address: 10,
            max_failed_logins: 1000,
            ..Config::default()
        };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let flood = Raw::new(&s.core, IpAddr::from([127, 0, 0, 2]));
        let mut refused = 0;
        for _ in 0..200 {
            match flood.login_start("victim", "guess").await {
                Ok(_) => {}
                Err(code) => {
                    assert_eq!(code, ErrorCode::SLOW_DOWN);
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 190, "the burst of 10 passes, the rest is refused");
        let (_, message) = keyserver_protocol::handshake::login::start(
            &mut rand::rngs::OsRng,
            &name_of("victim"),
            &pw("guess"),
        )
        .unwrap();
        let r = flood.send(&Request::LoginStart { user: name_of("victim"), message }).await;
        assert!(
            matches!(&r, Response::Error(e) if e.code == ErrorCode::SLOW_DOWN && e.retry_after_secs.is_some()),
            "{r:?}"
        );
        // Another address is served meanwhile.
        for _ in 0..5 {
            s.login("alice", "pw").await.unwrap();
        }
        // The flood's bucket refills with time.
        s.advance(Duration::from_secs(1));
        assert!(flood.login_start("victim", "guess").await.is_ok());
    }
}
