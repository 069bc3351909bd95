//! Registration and login.

use std::{sync::Arc, time::Duration};

use keyserver::config::Config;
use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, Request, Response,
    audit_chain::EventKind,
    ops::{ChangePasswordFinish, ChangePasswordStart},
};
use local_client::ClientError;
use rand::rngs::OsRng;

use crate::{harness::*, on_every_backend};

on_every_backend! {
    async fn registering_a_taken_name_fails_and_leaves_the_account_untouched(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "first").await;
        let again = s.connect().await.register(&name_of("alice"), &pw("second")).await;
        assert!(matches!(again, Err(ClientError::UserExists)), "{again:?}");
        // Refused at the first step too, before any OPAQUE work.
        assert_eq!(s.raw().register("alice", "third").await, Err(ErrorCode::USER_EXISTS));
        s.login("alice", "first").await.unwrap();
        assert!(matches!(s.login("alice", "second").await, Err(ClientError::AuthFailed { .. })));
    }
}

on_every_backend! {
    async fn a_wrong_password_and_an_unknown_user_fail_alike(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "right").await;
        assert!(matches!(s.login("alice", "wrong").await, Err(ClientError::AuthFailed { .. })));
        assert!(matches!(s.login("nobody", "right").await, Err(ClientError::AuthFailed { .. })));
        // The first replies have the same size for a real and an unknown name.
        let raw = s.raw();
        let (_, _, real) = raw.login_start("alice", "guess").await.unwrap();
        let (_, _, fake) = raw.login_start("nobody", "guess").await.unwrap();
        assert_eq!(real.len(), fake.len());
        // The audit log of the real account shows the failures.
        let session = s.login("alice", "right").await.unwrap();
        let report = session.audit().await.unwrap();
        report.verification.unwrap();
        let failed = report
            .events
            .iter()
            .filter(|e| e.body.kind == EventKind::LoginFailed)
            .count();
        // The client library aborted its wrong login (failed), the raw one was abandoned
        // and is still pending.
        assert_eq!(failed, 1);
    }
}

on_every_backend! {
    async fn a_handshake_is_finished_once_and_not_after_it_expired(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let raw = s.raw();
        let (flow, handshake, ke2) = raw.login_start("alice", "pw").await.unwrap();
        s.advance(Duration::from_secs(s.config.handshake_timeout_secs + 1));
        let fin = flow.finish(&mut OsRng, &pw("pw"), &ke2, KSF).unwrap();
        let late = raw
            .send(&Request::LoginFinish { handshake, message: fin.message.clone() })
            .await;
        assert!(
            matches!(&late, Response::Error(e) if e.code == ErrorCode::UNKNOWN_HANDSHAKE),
            "{late:?}"
        );
        // The expired login counts as failed.
        let session = s.login("alice", "pw").await.unwrap();
        let kinds: Vec<_> =
            session.audit().await.unwrap().events.iter().map(|e| e.body.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Register,
                EventKind::LoginStarted,
                EventKind::LoginFailed,
                EventKind::LoginStarted,
                EventKind::LoginSucceeded,
                // The audit's own list of names.
                EventKind::List,
            ]
        );
        // And a finished one cannot be finished again.
        let (flow, handshake, ke2) = raw.login_start("alice", "pw").await.unwrap();
        let fin = flow.finish(&mut OsRng, &pw("pw"), &ke2, KSF).unwrap();
        let first = raw.send(&Request::LoginFinish { handshake, message: fin.message.clone() }).await;
        assert!(matches!(first, Response::LoggedIn { .. }), "{first:?}");
        let second = raw.send(&Request::LoginFinish { handshake, message: fin.message }).await;
        assert!(
            matches!(&second, Response::Error(e) if e.code == ErrorCode::UNKNOWN_HANDSHAKE),
            "{second:?}"
        );
    }
}

on_every_backend! {
    /// The account is read in the same transaction that counts the login's guess, so a
    /// password change cannot slip between them: a login that got the old record has its
    /// `login_started` before the `change_password` in the chain, and one that got the new
    /// record after it.
    async fn a_password_change_racing_a_login_start_never_lets_a_login_use_an_uncounted_record(kind: Kind) {
        let config = Config { max_failed_logins: 1000, ..Config::default() };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw0").await;
        for i in 0..8 {
            let (old, new) = (format!("pw{i}"), format!("pw{}", i + 1));
            let changer = s.raw().login("alice", &old).await.unwrap();
            changer.reauth().await.unwrap();
            // The new registration's two steps, the second one raced against a login.
            let (flow, message) = keyserver_protocol::handshake::registration::start(
                &mut OsRng,
                &name_of("alice"),
                &pw(&new),
            )
            .unwrap();
            let Ok(OpResponse::ChangePasswordStarted(started)) = changer
                .op(&OpRequest::ChangePasswordStart(ChangePasswordStart { message }))
                .await
            else {
                panic!("change password start")
            };
            let fin = flow.finish(&mut OsRng, &pw(&new), started.message.as_slice(), KSF).unwrap();
            let sealed = fin.master_key.seal_storage_key(&mut OsRng, &name_of("alice"), changer.epoch + 1, &changer.storage_key);
            let finish = OpRequest::ChangePasswordFinish(ChangePasswordFinish {
                epoch: changer.epoch + 1,
                upload: fin.upload,
                sealed_storage_key: keyserver_protocol::codec::Bytes::new(sealed).unwrap(),
            });
            let raw = s.raw();
            let (change, start) = tokio::join!(changer.op(&finish), async {
                let (flow, _handshake, ke2) = raw.login_start("alice", &old).await.unwrap();
                flow.finish(&mut OsRng, &pw(&old), &ke2, KSF).is_ok()
            });
            assert!(matches!(change, Ok(OpResponse::PasswordChanged(_))), "{change:?}");
            let old_record = start;
            let session = s.login("alice", &new).await.unwrap();
            let events = session.audit().await.unwrap().events;
            let change_at = events
                .iter()
                .rposition(|e| e.body.kind == EventKind::ChangePassword)
                .unwrap();
            // The raced login's start: the last one before the check login's own (the last
            // three events are its start, its success and the audit's list).
            let last_start = events[..events.len() - 3]
                .iter()
                .rposition(|e| e.body.kind == EventKind::LoginStarted)
                .unwrap();
            assert_eq!(
                old_record,
                last_start < change_at,
                "iteration {i}: the login used the {} record but its guess was counted {} the change",
                if old_record { "old" } else { "new" },
                if last_start < change_at { "before" } else { "after" },
            );
        }
    }
}

/// `Attest` needs no session: a server without a security module says so, one with the
/// simulated module answers a document naming its TLS key and the nonce, and the requests
/// are metered per address like handshake starts (each costs a module call).
#[tokio::test]
async fn attestation_is_answered_only_with_a_module_and_is_metered_like_a_handshake() {
    use keyserver::attestation::{Attester, TlsIdentity, simulated};
    use keyserver_protocol::attestation::{self, TrustedRoot};
    let config = Config {
        handshakes_per_second_per_address: 5,
        handshake_burst_per_address: 10,
        ..Config::default()
    };
    let s = Server::new(Kind::Sqlite, config).await.unwrap();
    let r = s.raw().send(&Request::Attest { nonce: [1; 32] }).await;
    assert!(
        matches!(&r, Response::Error(e) if e.code == ErrorCode::NO_ATTESTATION),
        "{r:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    simulated::create(dir.path()).unwrap();
    let module = simulated::Simulated::open(dir.path()).unwrap();
    let identity = TlsIdentity::generate().unwrap();
    let core = s.attested_instance(Arc::new(Attester::new(
        Arc::new(module),
        identity.spki.clone(),
    )));
    let raw = Raw::new(&core, std::net::IpAddr::from([127, 0, 0, 9]));
    let Response::Attestation { document } = raw.send(&Request::Attest { nonce: [2; 32] }).await
    else {
        panic!("no document")
    };
    let pem = std::fs::read(dir.path().join(simulated::DIR).join(simulated::ROOT_CERT)).unwrap();
    let root = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    // The module signs with its own clock (a real one), not the harness's.
    use keyserver::clock::Clock;
    let now = u64::try_from(keyserver::clock::SystemClock::default().now().unix_secs()).unwrap();
    let doc = attestation::verify(document.as_slice(), TrustedRoot::Der(&root), now).unwrap();
    assert_eq!(doc.user_data.as_deref(), Some(identity.spki.as_slice()));
    assert_eq!(doc.nonce.as_deref(), Some(&[2u8; 32][..]));
    // The burst of 10 (one spent above), then SLOW_DOWN.
    let mut refused = 0;
    for _ in 0..20 {
        if let Response::Error(e) = raw.send(&Request::Attest { nonce: [3; 32] }).await {
            assert_eq!(e.code, ErrorCode::SLOW_DOWN);
            refused += 1;
        }
    }
    assert_eq!(refused, 11);
}
