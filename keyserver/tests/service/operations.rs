//! Every operation inside a session, through the client library and by hand.

use keyserver::config::Config;
use keyserver_protocol::{ErrorCode, OpRequest, OpResponse, SecretBytes, audit_chain::EventKind};
use local_client::ClientError;

use crate::{harness::*, on_every_backend};

on_every_backend! {
    async fn every_operation_works_and_is_in_the_verified_audit_log(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        let seed = SecretBytes::new((0..=255).collect());
        assert_eq!(a.store(&secret("wallet"), &seed, false).await.unwrap(), 1);
        let (got, v) = a.retrieve(&secret("wallet")).await.unwrap();
        assert_eq!((got.expose_secret(), v), (seed.expose_secret(), 1));
        let listed = a.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].version, listed[0].size), ("wallet", 1, 256));
        assert!(matches!(
            a.store(&secret("wallet"), &seed, false).await,
            Err(ClientError::NameExists)
        ));
        assert_eq!(a.store(&secret("wallet"), &pw("v2"), true).await.unwrap(), 2);
        assert_eq!(a.retrieve(&secret("wallet")).await.unwrap().0.expose_secret(), b"v2");
        a.delete(&secret("wallet")).await.unwrap();
        assert!(matches!(a.delete(&secret("wallet")).await, Err(ClientError::NotFound)));
        assert!(matches!(a.retrieve(&secret("wallet")).await, Err(ClientError::NotFound)));
        a.change_password(&pw("pw"), &pw("new")).await.unwrap();
        let report = a.audit().await.unwrap();
        report.verification.unwrap();
        let kinds: Vec<_> = report.events.iter().map(|e| e.body.kind).collect();
        use EventKind as K;
        assert_eq!(
            kinds,
            [
                K::Register, K::LoginStarted, K::LoginSucceeded, K::Store, K::Retrieve, K::List,
                K::Store, K::Store, K::Retrieve, K::Delete, K::Delete, K::Retrieve,
                // The change proves the password first (a reauth).
                K::LoginStarted, K::LoginSucceeded, K::ChangePassword,
                // The audit's own list of names.
                K::List,
            ]
        );
        a.logout().await.unwrap();
        assert!(matches!(a.list().await, Err(ClientError::SessionEnded)));
        assert!(matches!(s.login("alice", "pw").await, Err(ClientError::AuthFailed { .. })));
        let b = s.login("alice", "new").await.unwrap();
        assert_eq!(b.store(&secret("wallet"), &seed, false).await.unwrap(), 3);
    }
}

on_every_backend! {
    /// Versions only grow, across replace and delete, and the server says which version a
    /// store must carry (by hand: the client library would seal again by itself).
    async fn versions_grow_across_replace_and_delete(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.raw().login("alice", "pw").await.unwrap();
        let store = |version, replace, data: &[u8]| {
            a.store_op("wallet", version, data, replace)
        };
        let code = |r: Result<OpResponse, ErrorCode>| match r.unwrap() {
            OpResponse::Error(e) => (e.code, e.expected_version),
            other => panic!("{other:?}"),
        };
        assert_eq!(code(a.op(&store(2, false, b"c1")).await), (ErrorCode::VERSION_MISMATCH, Some(1)));
        assert!(matches!(a.op(&store(1, false, b"c1")).await, Ok(OpResponse::Stored(x)) if x.version == 1));
        assert_eq!(code(a.op(&store(2, false, b"c2")).await), (ErrorCode::NAME_EXISTS, None));
        assert_eq!(code(a.op(&store(1, true, b"c2")).await), (ErrorCode::VERSION_MISMATCH, Some(2)));
        assert!(matches!(a.op(&store(2, true, b"c2")).await, Ok(OpResponse::Stored(x)) if x.version == 2));
        let get = a.retrieve_op("wallet");
        let Ok(OpResponse::Secret(got)) = a.op(&get).await else { panic!() };
        assert_eq!(got.version, 2);
        let del = a.delete_op("wallet");
        assert_eq!(a.op(&del).await, Ok(OpResponse::Deleted));
        assert_eq!(code(a.op(&del).await), (ErrorCode::NOT_FOUND, None));
        assert_eq!(code(a.op(&get).await), (ErrorCode::NOT_FOUND, None));
        assert_eq!(code(a.op(&store(1, false, b"c3")).await), (ErrorCode::VERSION_MISMATCH, Some(3)));
        assert!(matches!(a.op(&store(3, false, b"c3")).await, Ok(OpResponse::Stored(x)) if x.version == 3));
    }
}

on_every_backend! {
    async fn accounts_never_see_each_others_secrets(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        s.register("bob", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        let b = s.login("bob", "pw").await.unwrap();
        a.store(&secret("wallet"), &pw("alice's"), false).await.unwrap();
        assert!(matches!(b.retrieve(&secret("wallet")).await, Err(ClientError::NotFound)));
        assert!(matches!(b.delete(&secret("wallet")).await, Err(ClientError::NotFound)));
        assert!(b.list().await.unwrap().is_empty());
        assert_eq!(a.retrieve(&secret("wallet")).await.unwrap().0.expose_secret(), b"alice's");
        // Bob's own store under the same name is his own version 1.
        assert_eq!(b.store(&secret("wallet"), &pw("bob's"), false).await.unwrap(), 1);
        assert_eq!(a.retrieve(&secret("wallet")).await.unwrap().0.expose_secret(), b"alice's");
    }
}

on_every_backend! {
    async fn list_pages_in_name_order_and_hides_deleted(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        // More than one page (256), stored out of order.
        let n = keyserver_protocol::limits::LIST_PAGE + 10;
        for i in (0..n).rev() {
            a.store(&secret(&format!("s{i:04}")), &SecretBytes::new(vec![0; 9]), false).await.unwrap();
        }
        a.delete(&secret("s0003")).await.unwrap();
        let listed = a.list().await.unwrap();
        let names: Vec<_> = listed.iter().map(|e| e.name.to_string()).collect();
        let mut want: Vec<_> = (0..n).filter(|i| *i != 3).map(|i| format!("s{i:04}")).collect();
        want.sort();
        assert_eq!(names, want);
        assert!(listed.iter().all(|e| e.size == 9 && e.version == 1));
        // By hand: the first page says more follow.
        let raw = s.raw().login("alice", "pw").await.unwrap();
        let Ok(OpResponse::List(page)) = raw.op(&list_op()).await else { panic!() };
        assert_eq!((page.entries.len(), page.more), (keyserver_protocol::limits::LIST_PAGE, true));
    }
}

on_every_backend! {
    /// The quota counts live secrets: a replace does not count again, a delete frees a
    /// place, and a refused store changes nothing.
    async fn the_quota_counts_live_secrets(kind: Kind) {
        let config = Config { max_secrets_per_account: 3, ..Config::default() };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        for i in 0..3 {
            a.store(&secret(&format!("s{i}")), &pw("c"), false).await.unwrap();
        }
        let quota = |r: Result<u64, ClientError>| matches!(r, Err(ClientError::Server(ErrorCode::QUOTA)));
        assert!(quota(a.store(&secret("extra"), &pw("c"), false).await));
        assert_eq!(a.store(&secret("s0"), &pw("c2"), true).await.unwrap(), 2);
        a.delete(&secret("s1")).await.unwrap();
        assert!(a.delete(&secret("s1")).await.is_err());
        assert_eq!(a.store(&secret("extra"), &pw("c"), false).await.unwrap(), 1);
        assert!(quota(a.store(&secret("s1"), &pw("c"), false).await));
        assert_eq!(a.list().await.unwrap().len(), 3);
        let report = a.audit().await.unwrap();
        report.verification.unwrap();
        let refused = report
            .events
            .iter()
            .filter(|e| e.body.outcome == keyserver_protocol::audit_chain::Outcome::Refused)
            .count();
        assert_eq!(refused, 2);
    }
}

on_every_backend! {
    async fn concurrent_stores_lose_nothing_and_keep_the_chain(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move {
                    a.store(&secret(&format!("secret-{i}")), &pw("ct"), false).await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 1);
        }
        assert_eq!(a.list().await.unwrap().len(), 50);
        let report = a.audit().await.unwrap();
        report.verification.unwrap();
        // register, login started and succeeded, 50 stores, 1 list, the audit's list
        assert_eq!(report.events.len(), 55);
    }
}

on_every_backend! {
    /// Every answer that read the account carries its audit position after the operation's
    /// own event, the position a client pins; a mutation sent again gets its first answer
    /// with the position it had then.
    async fn answers_carry_the_audit_position_after_their_own_event(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.raw().login("alice", "pw").await.unwrap();
        let store = a.seal(&a.store_op("w", 1, b"x", false));
        let first = a.send_for_answer(&store).await.unwrap();
        let after_store = first.position.unwrap();
        let list = a.seal(&list_op());
        let after_list = a.send_for_answer(&list).await.unwrap().position.unwrap();
        assert_eq!(after_list.seq, after_store.seq + 1);
        // The chain as the client reads it ends there, with those hashes.
        let audit = a.seal(&OpRequest::Audit(keyserver_protocol::ops::Audit { after: 0 }));
        let OpResponse::Audit(page) = a.send_for_answer(&audit).await.unwrap().response else {
            panic!("not an audit page")
        };
        let at = |seq: u64| page.events.iter().find(|e| e.seq == seq).unwrap();
        assert_eq!(at(after_store.seq).hash, after_store.head);
        assert_eq!(at(after_list.seq).hash, after_list.head);
        assert_eq!(at(after_store.seq).body.version, Some(1));
        assert_eq!(page.events.last().unwrap().seq, after_list.seq);
        // The store sent again: its first answer, position and all.
        let again = a.send_for_answer(&store).await.unwrap();
        assert_eq!(again, first);
        // An operation that reads nothing of the account answers with its position too
        // (a client refuses any answer but a refusal without one).
        let abort = a.seal(&OpRequest::ReauthAbort(keyserver_protocol::ops::ReauthAbort {
            handshake: keyserver_protocol::envelope::HandshakeId([9; 16]),
        }));
        let aborted = a.send_for_answer(&abort).await.unwrap();
        assert!(matches!(aborted.response, OpResponse::ReauthAborted(_)));
        assert_eq!(aborted.position, Some(after_list));
    }
}

on_every_backend! {
    /// A checkpoint is kept only for a position of the account's chain, the newest eight
    /// are kept, and a key rotation drops them (they were made under the old key). The
    /// client passes over checkpoints that do not verify under its key.
    async fn checkpoints_are_kept_for_real_positions_and_dropped_with_the_key(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        a.list().await.unwrap();
        let real = a.position().unwrap();
        a.save_checkpoint(real).await.unwrap();
        let newest = a.newest_checkpoint().await.unwrap().unwrap();
        assert_eq!(newest.checkpoint.position, real);
        // A position that is not in the chain is refused.
        let made_up = keyserver_protocol::audit_chain::AuditPosition { head: [7; 32], ..real };
        assert!(matches!(
            a.save_checkpoint(made_up).await,
            Err(ClientError::Server(ErrorCode::MALFORMED))
        ));
        // A checkpoint whose MAC is not this account's key's is passed over.
        let raw = s.raw().login("alice", "pw").await.unwrap();
        raw.op(&list_op()).await.unwrap();
        let later = a.position().map_or(0, |p| p.seq) + 3;
        let forged = OpRequest::SaveCheckpoint(keyserver_protocol::ops::SaveCheckpoint {
            checkpoint: keyserver_protocol::checkpoint::Checkpoint {
                position: keyserver_protocol::audit_chain::AuditPosition {
                    seq: later,
                    head: s.count_hash(later).await,
                },
                mac: [0; 32],
            },
        });
        assert_eq!(raw.op(&forged).await, Ok(OpResponse::CheckpointSaved));
        assert_eq!(a.newest_checkpoint().await.unwrap().unwrap().checkpoint.position, real);
        // Only the newest eight are kept.
        for _ in 0..9 {
            a.list().await.unwrap();
            a.save_checkpoint(a.position().unwrap()).await.unwrap();
        }
        let kept = s.count("SELECT COUNT(*) FROM checkpoints").await;
        assert_eq!(kept, 8);
        // A key rotation drops them all.
        a.rotate_key(&pw("pw")).await.unwrap();
        assert_eq!(s.count("SELECT COUNT(*) FROM checkpoints").await, 0);
        assert!(a.newest_checkpoint().await.unwrap().is_none());
    }
}
