//! Changing the password and rotating the storage key: each needs the password proven
//! again in the session, ends every other session of the account at once, on every
//! instance, and moves the account's epoch, so that logins in flight and restored old
//! credentials are refused.

use keyserver::config::Config;
use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, SecretBytes,
    audit_chain::EventKind,
    codec::Bytes,
    handshake::registration,
    ops::{ChangePasswordFinish, ChangePasswordStart, RotateKeyFinish, RotateKeyStage},
    seal::StorageKey,
};
use local_client::ClientError;
use rand::rngs::OsRng;

use crate::{harness::*, on_every_backend};

fn code(r: Result<OpResponse, ErrorCode>) -> ErrorCode {
    match r {
        Ok(OpResponse::Error(e)) => e.code,
        Err(c) => c,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

/// Both steps of a password change by hand: `Ok` with the new epoch, or the refusal.
async fn change_by_hand(a: &RawSession, new: &str) -> Result<u64, ErrorCode> {
    let (flow, message) = registration::start(&mut OsRng, &a.user, &pw(new)).unwrap();
    let started = match a
        .op(&OpRequest::ChangePasswordStart(ChangePasswordStart {
            message,
        }))
        .await
    {
        Ok(OpResponse::ChangePasswordStarted(s)) => s,
        other => return Err(code(other)),
    };
    let fin = flow
        .finish(&mut OsRng, &pw(new), started.message.as_slice(), KSF)
        .unwrap();
    let epoch = a.epoch + 1;
    let sealed = fin
        .master_key
        .seal_storage_key(&mut OsRng, &a.user, epoch, &a.storage_key);
    match a
        .op(&OpRequest::ChangePasswordFinish(ChangePasswordFinish {
            epoch,
            upload: fin.upload,
            sealed_storage_key: Bytes::new(sealed).unwrap(),
        }))
        .await
    {
        Ok(OpResponse::PasswordChanged(r)) => Ok(r.epoch),
        other => Err(code(other)),
    }
}

on_every_backend! {
    async fn changing_the_password_needs_the_current_password_proven_in_the_session(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "old").await;
        let a = s.raw().login("alice", "old").await.unwrap();
        // A session alone (a phished token) cannot change the password.
        assert_eq!(change_by_hand(&a, "mine now").await, Err(ErrorCode::REAUTH_REQUIRED));
        // Nor with a wrong password: that reauth is a counted guess.
        let wrong = RawSession { password: "guess".into(), ..a.clone() };
        assert_eq!(wrong.reauth().await, Err(ErrorCode::AUTH_FAILED));
        // With the right one, one change goes through.
        a.reauth().await.unwrap();
        assert_eq!(change_by_hand(&a, "new").await, Ok(2));
        // The proof is used up: a second change needs another.
        let a2 = RawSession { epoch: 2, password: "new".into(), ..a.clone() };
        assert_eq!(change_by_hand(&a2, "newer").await, Err(ErrorCode::REAUTH_REQUIRED));
        // And a proof goes stale.
        a2.reauth().await.unwrap();
        s.advance(std::time::Duration::from_secs(s.config.reauth_window_secs + 1));
        assert_eq!(change_by_hand(&a2, "newer").await, Err(ErrorCode::REAUTH_REQUIRED));
        // The new password logs in; the old one does not.
        assert!(s.login("alice", "new").await.is_ok());
        assert!(matches!(s.login("alice", "old").await, Err(ClientError::AuthFailed { .. })));
        // The wrong reauth counted as a failed login in the log.
        let report = s.login("alice", "new").await.unwrap().audit().await.unwrap();
        report.verification.unwrap();
        assert!(report.events.iter().any(|e| e.body.kind == EventKind::LoginFailed));
    }
}

on_every_backend! {
    /// A phished session keeps reading until the user changes the password: then it ends,
    /// on this instance and on every other, at once (no clock moved).
    async fn changing_the_password_ends_every_other_session_at_once_on_every_instance(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "old").await;
        let mine = s.login("alice", "old").await.unwrap();
        let phished = s.login("alice", "old").await.unwrap();
        let elsewhere = s.login("alice", "old").await.unwrap();
        let other = s.instance();
        elsewhere.move_to(&connect(&other, LOCALHOST).await);
        phished.list().await.unwrap();
        elsewhere.list().await.unwrap();
        mine.change_password(&pw("old"), &pw("new")).await.unwrap();
        assert!(matches!(phished.list().await, Err(ClientError::SessionEnded)));
        assert!(matches!(elsewhere.list().await, Err(ClientError::SessionEnded)));
        // A secret stored after the change is out of their reach; mine goes on.
        mine.store(&secret("after"), &pw("x"), false).await.unwrap();
        assert!(matches!(phished.retrieve(&secret("after")).await, Err(ClientError::SessionEnded)));
        assert_eq!(mine.epoch(), 2);
        mine.list().await.unwrap();
        // Mine was sealed again for the new epoch: an instance that never held it takes it
        // in from the database.
        mine.move_to(&connect(&s.instance(), LOCALHOST).await);
        mine.list().await.unwrap();
    }
}

on_every_backend! {
    /// The session rows a password change deleted, put back afterwards by a database
    /// writer, do not bring the sessions back: their keys are sealed for the old epoch.
    async fn sessions_put_back_after_a_password_change_stay_ended(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "old").await;
        let mine = s.login("alice", "old").await.unwrap();
        let phished = s.login("alice", "old").await.unwrap();
        phished.list().await.unwrap();
        let copy = "CREATE TABLE saved_sessions AS SELECT * FROM sessions";
        s.sql(copy, copy).await;
        mine.change_password(&pw("old"), &pw("new")).await.unwrap();
        let back = "INSERT INTO sessions SELECT * FROM saved_sessions \
                    WHERE id NOT IN (SELECT id FROM sessions)";
        s.sql(back, back).await;
        // Marking the row as being of the new epoch does not help either.
        let relabel = "UPDATE sessions SET epoch = (SELECT epoch FROM accounts)";
        s.sql(relabel, relabel).await;
        for instance in [s.core.clone(), s.instance()] {
            phished.move_to(&connect(&instance, LOCALHOST).await);
            assert!(matches!(phished.list().await, Err(ClientError::SessionEnded)));
        }
        mine.list().await.unwrap();
    }
}

on_every_backend! {
    async fn a_login_started_before_a_password_change_cannot_finish_after_it(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "old").await;
        let raw = s.raw();
        let (flow, handshake, ke2) = raw.login_start("alice", "old").await.unwrap();
        s.login("alice", "old").await.unwrap().change_password(&pw("old"), &pw("new")).await.unwrap();
        // The old password opens KE2 (it was made from the old record) but the login fails.
        let fin = flow.finish(&mut OsRng, &pw("old"), &ke2, KSF).unwrap();
        let r = raw
            .send(&keyserver_protocol::Request::LoginFinish { handshake, message: fin.message })
            .await;
        assert!(
            matches!(&r, keyserver_protocol::Response::Error(e) if e.code == ErrorCode::AUTH_FAILED),
            "{r:?}"
        );
    }
}

on_every_backend! {
    /// The sealed storage key is bound to the account's epoch: the old credentials
    /// restored into the row (the record, its credential identifier and the sealed key from
    /// before a password change) do not open as the current ones.
    async fn credentials_restored_from_before_a_password_change_do_not_open(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "old").await;
        s.sql(
            "CREATE TABLE saved AS SELECT record, credential_id, sealed_storage_key FROM accounts",
            "CREATE TABLE saved AS SELECT record, credential_id, sealed_storage_key FROM accounts",
        )
        .await;
        let a = s.login("alice", "old").await.unwrap();
        a.store(&secret("w"), &pw("x"), false).await.unwrap();
        a.change_password(&pw("old"), &pw("new")).await.unwrap();
        s.sql(
            "UPDATE accounts SET record = (SELECT record FROM saved), \
             credential_id = (SELECT credential_id FROM saved), \
             sealed_storage_key = (SELECT sealed_storage_key FROM saved)",
            "UPDATE accounts SET record = (SELECT record FROM saved), \
             credential_id = (SELECT credential_id FROM saved), \
             sealed_storage_key = (SELECT sealed_storage_key FROM saved)",
        )
        .await;
        let r = s.login("alice", "old").await;
        assert!(matches!(r, Err(ClientError::Integrity(_))), "{r:?}");
    }
}

on_every_backend! {
    async fn rotating_the_key_seals_every_secret_again_and_ends_other_sessions(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        let other = s.login("alice", "pw").await.unwrap();
        for i in 0..20 {
            a.store(&secret(&format!("s{i}")), &SecretBytes::new(vec![u8::try_from(i).unwrap(); 3000]), false)
                .await
                .unwrap();
        }
        a.store(&secret("s3"), &pw("second version"), true).await.unwrap();
        a.delete(&secret("s5")).await.unwrap();
        // Capture the old ciphertexts.
        let before = s.raw().login("alice", "pw").await.unwrap();
        let old_key = before.storage_key.clone();
        assert_eq!(a.rotate_key(&pw("pw")).await.unwrap(), 19);
        assert_eq!(a.epoch(), 2);
        assert!(matches!(other.list().await, Err(ClientError::SessionEnded)));
        // Everything opens under the new key, at the same versions.
        let b = s.login("alice", "pw").await.unwrap();
        let (s3, v3) = b.retrieve(&secret("s3")).await.unwrap();
        assert_eq!((s3.expose_secret(), v3), (&b"second version"[..], 2));
        for i in (0..20).filter(|i| *i != 3 && *i != 5) {
            let (got, v) = b.retrieve(&secret(&format!("s{i}"))).await.unwrap();
            assert_eq!((got.expose_secret(), v), (&vec![u8::try_from(i).unwrap(); 3000][..], 1));
        }
        assert!(matches!(b.retrieve(&secret("s5")).await, Err(ClientError::NotFound)));
        // The old key opens nothing any more.
        let raw = s.raw().login("alice", "pw").await.unwrap();
        let Ok(OpResponse::Secret(x)) = raw.op(&raw.retrieve_op("s0")).await else { panic!() };
        assert!(old_key.open_secret(&raw.user, &secret("s0"), 1, x.sealed.as_slice()).is_err());
        let report = b.audit().await.unwrap();
        report.verification.unwrap();
        assert!(report.events.iter().any(|e| e.body.kind == EventKind::RotateKey));
    }
}

on_every_backend! {
    /// A rotation that dies half-way (staged, never finished) changes nothing, and one that
    /// did not stage exactly the live secrets at their versions is refused.
    async fn a_rotation_changes_nothing_unless_it_finishes_with_every_secret(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let lib = s.login("alice", "pw").await.unwrap();
        for n in ["a", "b", "c"] {
            lib.store(&secret(n), &pw(n), false).await.unwrap();
        }
        let a = s.raw().login("alice", "pw").await.unwrap();
        a.reauth().await.unwrap();
        let new_key = StorageKey::generate(&mut OsRng);
        let staged = |n: &str| a.staged(&new_key, n, 1, Some(n.as_bytes()));
        let stage = OpRequest::RotateKeyStage(RotateKeyStage {
            secrets: vec![staged("a"), staged("b")],
        });
        assert!(matches!(a.op(&stage).await, Ok(OpResponse::Staged(s)) if s.staged == 2));
        let finish = |secrets| {
            OpRequest::RotateKeyFinish(RotateKeyFinish {
                epoch: a.epoch + 1,
                sealed_storage_key: Bytes::new(vec![0; 73]).unwrap(),
                secrets,
            })
        };
        // "c" was not staged: refused, nothing swapped.
        assert_eq!(code(a.op(&finish(2)).await), ErrorCode::STALE);
        assert_eq!(lib.retrieve(&secret("a")).await.unwrap().0.expose_secret(), b"a");
        // The session dies half-way: the old key still opens everything, and what was
        // staged goes with the session.
        assert_eq!(a.op(&OpRequest::Logout).await, Ok(OpResponse::LoggedOut));
        for n in ["a", "b", "c"] {
            assert_eq!(lib.retrieve(&secret(n)).await.unwrap().0.expose_secret(), n.as_bytes());
        }
        s.core.purge().await;
        // A store racing the rotation makes it stale as well.
        let r = s.raw().login("alice", "pw").await.unwrap();
        r.reauth().await.unwrap();
        let stage = OpRequest::RotateKeyStage(RotateKeyStage {
            secrets: vec![staged("a"), staged("b"), staged("c")],
        });
        assert!(matches!(r.op(&stage).await, Ok(OpResponse::Staged(s)) if s.staged == 3));
        lib.store(&secret("b"), &pw("b2"), true).await.unwrap();
        let finish = OpRequest::RotateKeyFinish(RotateKeyFinish {
            epoch: r.epoch + 1,
            sealed_storage_key: Bytes::new(vec![0; 73]).unwrap(),
            secrets: 3,
        });
        assert_eq!(code(r.op(&finish).await), ErrorCode::STALE);
        assert_eq!(lib.retrieve(&secret("b")).await.unwrap().0.expose_secret(), b"b2");
        let _ = r.op(&list_op()).await.unwrap();
    }
}

on_every_backend! {
    /// A stale rotation drops what it staged, so that the next attempt in the same session
    /// starts from nothing: a secret deleted since it was staged cannot keep every later
    /// attempt stale.
    async fn a_rotation_started_again_after_a_stale_one_succeeds_in_the_same_session(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let lib = s.login("alice", "pw").await.unwrap();
        for n in ["a", "b"] {
            lib.store(&secret(n), &pw(n), false).await.unwrap();
        }
        let r = s.raw().login("alice", "pw").await.unwrap();
        r.reauth().await.unwrap();
        let new_key = StorageKey::generate(&mut OsRng);
        let stage = |names: &[(&str, bool)]| {
            OpRequest::RotateKeyStage(RotateKeyStage {
                secrets: names
                    .iter()
                    .map(|(n, live)| r.staged(&new_key, n, 1, live.then_some(n.as_bytes())))
                    .collect(),
            })
        };
        let finish = |secrets| {
            OpRequest::RotateKeyFinish(RotateKeyFinish {
                epoch: r.epoch + 1,
                sealed_storage_key: Bytes::new(
                    r.master_key.seal_storage_key(&mut OsRng, &r.user, r.epoch + 1, &new_key),
                )
                .unwrap(),
                secrets,
            })
        };
        let both_live = [("a", true), ("b", true)];
        assert!(matches!(r.op(&stage(&both_live)).await, Ok(OpResponse::Staged(s)) if s.staged == 2));
        lib.delete(&secret("b")).await.unwrap();
        assert_eq!(code(r.op(&finish(2)).await), ErrorCode::STALE);
        // Again, with b deleted: nothing of the first attempt is left.
        let b_deleted = [("a", true), ("b", false)];
        assert!(matches!(r.op(&stage(&b_deleted)).await, Ok(OpResponse::Staged(s)) if s.staged == 2));
        assert!(matches!(r.op(&finish(2)).await, Ok(OpResponse::KeyRotated(k)) if k.epoch == r.epoch + 1));
        let after = s.login("alice", "pw").await.unwrap();
        assert_eq!(after.retrieve(&secret("a")).await.unwrap().0.expose_secret(), b"a");
    }
}

on_every_backend! {
    /// Staging is bounded by the account's count of secrets: a session cannot fill the
    /// database with staged rows.
    async fn staging_more_secrets_than_the_account_has_is_refused(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let lib = s.login("alice", "pw").await.unwrap();
        for i in 0..3 {
            lib.store(&secret(&format!("s{i}")), &pw("x"), false).await.unwrap();
        }
        let r = s.raw().login("alice", "pw").await.unwrap();
        r.reauth().await.unwrap();
        let new_key = StorageKey::generate(&mut OsRng);
        let stage = |from: usize, to: usize| {
            OpRequest::RotateKeyStage(RotateKeyStage {
                secrets: (from..to)
                    .map(|i| r.staged(&new_key, &format!("s{i}"), 1, Some(b"x")))
                    .collect(),
            })
        };
        assert!(matches!(r.op(&stage(0, 2)).await, Ok(OpResponse::Staged(s)) if s.staged == 2));
        assert_eq!(code(r.op(&stage(2, 4)).await), ErrorCode::QUOTA);
        assert!(matches!(r.op(&stage(2, 3)).await, Ok(OpResponse::Staged(s)) if s.staged == 3));
    }
}

/// On Postgres, an operation of a session that waits for its account while a password
/// change holds it (and ends the session) is refused when the change commits: it does not
/// go on to act after its session was ended. (SQLite runs one transaction at a time.)
#[tokio::test]
async fn a_request_queued_behind_a_password_change_is_refused_once_its_session_ends() {
    use sqlx::{Connection, Executor};
    let Some(s) = Server::new(Kind::Postgres, Config::default()).await else {
        return;
    };
    s.register("alice", "pw").await;
    let y = s.raw().login("alice", "pw").await.unwrap();
    let mut c = sqlx::PgConnection::connect(&s.postgres_url().unwrap())
        .await
        .unwrap();
    // What a password change does, held open: the account locked, the other sessions
    // deleted, not yet committed.
    let mut change = c.begin().await.unwrap();
    change
        .execute("SELECT id FROM accounts FOR UPDATE")
        .await
        .unwrap();
    let store = y.store_op("late", 1, b"written after the change", false);
    let queued = tokio::spawn(async move { y.op(&store).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "the store must wait for the account");
    change.execute("DELETE FROM sessions").await.unwrap();
    change.commit().await.unwrap();
    assert_eq!(code(queued.await.unwrap()), ErrorCode::UNKNOWN_SESSION);
    assert_eq!(s.count("SELECT COUNT(*) FROM secrets").await, 0);
}
