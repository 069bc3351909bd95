//! The storage contract as tests, run against every backend.

use keyserver_protocol::{
    SecretName, UserName,
    audit_chain::{ChainVerifier, EventKind},
};

use super::{Done, NewSecret, NewSession, RequestId, Storage, StoreOutcome};
use crate::guess_limit::{LockoutPolicy, LoginGate};

fn policy() -> LockoutPolicy {
    LockoutPolicy {
        max_failed: 3,
        base: std::time::Duration::from_secs(60),
        max: std::time::Duration::from_secs(600),
    }
}

fn user(n: &str) -> UserName {
    UserName::new(n).unwrap()
}

fn name(n: &str) -> SecretName {
    SecretName::new(n).unwrap()
}

async fn account(s: &dyn Storage, n: &str) -> i64 {
    assert!(
        s.create_account(&user(n), b"record", b"sealed key", 1000)
            .await
            .unwrap()
    );
    s.find_account(&user(n)).await.unwrap().unwrap().id
}

async fn verify_chain(s: &dyn Storage, id: i64, n: &str) -> u64 {
    let mut v = ChainVerifier::new(&user(n));
    let mut after = 0;
    loop {
        let page = s.audit_events(id, after, 7).await.unwrap();
        if page.is_empty() {
            return v.last_seq();
        }
        for e in &page {
            v.push(e).unwrap();
        }
        after = v.last_seq();
    }
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh request id.
fn rid() -> RequestId {
    RequestId {
        session: [7; 16],
        seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

fn enc_store(o: &StoreOutcome) -> Vec<u8> {
    format!("{o:?}").into_bytes()
}

fn enc_bool(b: &bool) -> Vec<u8> {
    vec![u8::from(*b)]
}

async fn store(s: &dyn Storage, id: i64, u: &UserName, n: NewSecret<'_>, now: i64) -> StoreOutcome {
    match s
        .store_secret(id, u, n, rid(), enc_store, now)
        .await
        .unwrap()
    {
        Done::Fresh(o) => o,
        Done::Recorded(_) => panic!("fresh request id came back recorded"),
    }
}

async fn delete(s: &dyn Storage, id: i64, u: &UserName, n: &SecretName, now: i64) -> bool {
    match s
        .delete_secret(id, u, n, rid(), enc_bool, now)
        .await
        .unwrap()
    {
        Done::Fresh(d) => d,
        Done::Recorded(_) => panic!("fresh request id came back recorded"),
    }
}

fn new<'a>(n: &'a SecretName, version: u64, replace: bool, sealed: &'a [u8]) -> NewSecret<'a> {
    NewSecret {
        name: n,
        version,
        replace,
        sealed,
    }
}

pub(crate) async fn registering_a_taken_name_leaves_the_account_untouched(s: &dyn Storage) {
    account(s, "alice").await;
    assert!(
        !s.create_account(&user("alice"), b"other", b"other", 2000)
            .await
            .unwrap()
    );
    let a = s.find_account(&user("alice")).await.unwrap().unwrap();
    assert_eq!(a.record, b"record");
    assert_eq!(a.sealed_storage_key, b"sealed key");
    assert!(s.find_account(&user("nobody")).await.unwrap().is_none());
}

pub(crate) async fn versions_grow_across_replace_and_delete(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    let w = name("wallet");
    assert_eq!(
        store(s, id, &u, new(&w, 2, false, b"c1"), 1).await,
        StoreOutcome::VersionMismatch { expected: 1 }
    );
    assert_eq!(
        store(s, id, &u, new(&w, 1, false, b"c1"), 1).await,
        StoreOutcome::Stored {
            version: 1,
            created: 1
        }
    );
    assert_eq!(
        store(s, id, &u, new(&w, 2, false, b"c2"), 2).await,
        StoreOutcome::Exists
    );
    assert_eq!(
        store(s, id, &u, new(&w, 1, true, b"c2"), 2).await,
        StoreOutcome::VersionMismatch { expected: 2 }
    );
    assert_eq!(
        store(s, id, &u, new(&w, 2, true, b"c2"), 2).await,
        StoreOutcome::Stored {
            version: 2,
            created: 2
        }
    );
    let got = s.retrieve_secret(id, &u, &w, 3).await.unwrap().unwrap();
    assert_eq!((got.version, got.sealed.as_slice()), (2, &b"c2"[..]));
    assert!(delete(s, id, &u, &w, 4).await);
    assert!(!delete(s, id, &u, &w, 4).await);
    assert!(s.retrieve_secret(id, &u, &w, 5).await.unwrap().is_none());
    assert_eq!(
        store(s, id, &u, new(&w, 1, false, b"c3"), 6).await,
        StoreOutcome::VersionMismatch { expected: 3 }
    );
    assert_eq!(
        store(s, id, &u, new(&w, 3, false, b"c3"), 6).await,
        StoreOutcome::Stored {
            version: 3,
            created: 6
        }
    );
    verify_chain(s, id, "alice").await;
}

pub(crate) async fn accounts_never_see_each_others_secrets(s: &dyn Storage) {
    let a = account(s, "alice").await;
    let b = account(s, "bob").await;
    let w = name("wallet");
    store(s, a, &user("alice"), new(&w, 1, false, b"alice's"), 1).await;
    assert!(
        s.retrieve_secret(b, &user("bob"), &w, 2)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!delete(s, b, &user("bob"), &w, 2).await);
    assert!(
        s.list_secrets(b, &user("bob"), None, 10, 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.retrieve_secret(a, &user("alice"), &w, 3)
            .await
            .unwrap()
            .unwrap()
            .sealed,
        b"alice's"
    );
}

pub(crate) async fn list_pages_in_name_order_and_hides_deleted(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    for i in (0..10).rev() {
        let n = name(&format!("s{i}"));
        store(s, id, &u, new(&n, 1, false, &[0u8; 50]), i).await;
    }
    delete(s, id, &u, &name("s3"), 20).await;
    let p1 = s.list_secrets(id, &u, None, 4, 21).await.unwrap();
    let names: Vec<_> = p1.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s4"]);
    assert_eq!(
        p1[0].size,
        50 - keyserver_protocol::seal::SEAL_OVERHEAD as u64
    );
    let p2 = s
        .list_secrets(id, &u, Some(&p1[3].name), 100, 21)
        .await
        .unwrap();
    assert_eq!(p2.len(), 5);
}

pub(crate) async fn every_change_is_in_the_chained_audit_log(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    assert_eq!(
        s.begin_login(id, &u, &policy(), 10).await.unwrap(),
        LoginGate::Allowed
    );
    s.login_finished(id, &u, false, None, 11).await.unwrap();
    assert_eq!(
        s.begin_login(id, &u, &policy(), 12).await.unwrap(),
        LoginGate::Allowed
    );
    assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, 2);
    s.login_finished(id, &u, true, None, 13).await.unwrap();
    assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, 0);
    store(s, id, &u, new(&name("k"), 1, false, b"x"), 14).await;
    s.retrieve_secret(id, &u, &name("k"), 15).await.unwrap();
    s.change_password(id, &u, b"new record", b"new key", rid(), b"changed", 16)
        .await
        .unwrap();
    s.logout(id, &u, rid(), b"bye", 17).await.unwrap();
    let events = s.audit_events(id, 0, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.body.kind).collect();
    use EventKind as K;
    assert_eq!(
        kinds,
        [
            K::Register,
            K::LoginStarted,
            K::LoginFailed,
            K::LoginStarted,
            K::LoginSucceeded,
            K::Store,
            K::Retrieve,
            K::ChangePassword,
            K::Logout
        ]
    );
    assert_eq!(verify_chain(s, id, "alice").await, 9);
    let a = s.find_account(&u).await.unwrap().unwrap();
    assert_eq!(
        (a.record.as_slice(), a.sealed_storage_key.as_slice()),
        (&b"new record"[..], &b"new key"[..])
    );
}

pub(crate) async fn a_repeated_request_is_applied_once_and_gets_the_first_answer(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    let w = name("wallet");
    let r = rid();
    let first = s
        .store_secret(id, &u, new(&w, 1, false, b"c1"), r, enc_store, 1)
        .await
        .unwrap();
    assert_eq!(
        first,
        Done::Fresh(StoreOutcome::Stored {
            version: 1,
            created: 1
        })
    );
    // The same request again, even with other contents, is not applied again.
    let again = s
        .store_secret(id, &u, new(&w, 2, true, b"c2"), r, enc_store, 2)
        .await
        .unwrap();
    assert_eq!(
        again,
        Done::Recorded(enc_store(&StoreOutcome::Stored {
            version: 1,
            created: 1
        }))
    );
    assert_eq!(
        s.recorded_response(r).await.unwrap(),
        Some(enc_store(&StoreOutcome::Stored {
            version: 1,
            created: 1
        }))
    );
    assert_eq!(
        s.retrieve_secret(id, &u, &w, 3)
            .await
            .unwrap()
            .unwrap()
            .sealed,
        b"c1"
    );
    let d = rid();
    assert_eq!(
        s.delete_secret(id, &u, &w, d, enc_bool, 4).await.unwrap(),
        Done::Fresh(true)
    );
    assert_eq!(
        s.delete_secret(id, &u, &w, d, enc_bool, 5).await.unwrap(),
        Done::Recorded(vec![1])
    );
    // Another session's same seq is another request.
    let other = RequestId {
        session: [8; 16],
        seq: r.seq,
    };
    assert_eq!(s.recorded_response(other).await.unwrap(), None);
    // Refusals are recorded too.
    s.store_secret(id, &u, new(&w, 2, false, b"c3"), rid(), enc_store, 6)
        .await
        .unwrap();
    let refused = rid();
    let first = s
        .store_secret(id, &u, new(&w, 3, false, b"c4"), refused, enc_store, 7)
        .await
        .unwrap();
    assert_eq!(first, Done::Fresh(StoreOutcome::Exists));
    assert_eq!(
        s.recorded_response(refused).await.unwrap(),
        Some(enc_store(&StoreOutcome::Exists))
    );
    // Purging forgets old responses only.
    assert!(s.purge_responses(5).await.unwrap() >= 2);
    assert_eq!(s.recorded_response(r).await.unwrap(), None);
    assert!(s.recorded_response(refused).await.unwrap().is_some());
    // register, store, retrieve, delete, store, refused store
    assert_eq!(verify_chain(s, id, "alice").await, 6);
}

pub(crate) async fn sessions_are_stored_touched_ended_by_logout_and_purged(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    let sid = [3u8; 16];
    s.login_finished(
        id,
        &u,
        true,
        Some(NewSession {
            id: sid,
            sealed_keys: b"sealed",
        }),
        100,
    )
    .await
    .unwrap();
    assert_eq!(s.session_count(id).await.unwrap(), 1);
    let got = s.load_session(sid).await.unwrap().unwrap();
    assert_eq!(
        (
            got.account,
            got.user.as_str(),
            got.sealed_keys.as_slice(),
            got.created,
            got.last_used
        ),
        (id, "alice", &b"sealed"[..], 100, 100)
    );
    assert!(s.touch_session(sid, 150).await.unwrap());
    assert_eq!(s.load_session(sid).await.unwrap().unwrap().last_used, 150);
    assert!(s.load_session([4u8; 16]).await.unwrap().is_none());
    // Logout ends it for every instance.
    s.logout(
        id,
        &u,
        RequestId {
            session: sid,
            seq: 1,
        },
        b"bye",
        160,
    )
    .await
    .unwrap();
    assert!(s.load_session(sid).await.unwrap().is_none());
    assert!(!s.touch_session(sid, 170).await.unwrap());
    // Expired sessions are purged, live ones kept.
    s.login_finished(
        id,
        &u,
        true,
        Some(NewSession {
            id: [5; 16],
            sealed_keys: b"a",
        }),
        200,
    )
    .await
    .unwrap();
    s.login_finished(
        id,
        &u,
        true,
        Some(NewSession {
            id: [6; 16],
            sealed_keys: b"b",
        }),
        300,
    )
    .await
    .unwrap();
    assert_eq!(s.purge_sessions(0, 250).await.unwrap(), 1);
    assert!(s.load_session([5; 16]).await.unwrap().is_none());
    assert!(s.load_session([6; 16]).await.unwrap().is_some());
}

pub(crate) async fn the_guess_count_locks_and_a_success_resets_it(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    for t in 0..3 {
        assert_eq!(
            s.begin_login(id, &u, &policy(), 100 + t).await.unwrap(),
            LoginGate::Allowed
        );
    }
    assert_eq!(
        s.begin_login(id, &u, &policy(), 103).await.unwrap(),
        LoginGate::Locked {
            retry_after_secs: 59
        }
    );
    // A refused login does not move the count or the clock of the lockout.
    assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, 3);
    assert_eq!(
        s.begin_login(id, &u, &policy(), 162).await.unwrap(),
        LoginGate::Allowed
    );
    // The fourth failure doubles the lockout.
    assert_eq!(
        s.begin_login(id, &u, &policy(), 163).await.unwrap(),
        LoginGate::Locked {
            retry_after_secs: 119
        }
    );
    assert_eq!(
        s.begin_login(id, &u, &policy(), 282).await.unwrap(),
        LoginGate::Allowed
    );
    s.login_finished(id, &u, true, None, 283).await.unwrap();
    assert_eq!(
        s.begin_login(id, &u, &policy(), 284).await.unwrap(),
        LoginGate::Allowed
    );
    let kinds: Vec<_> = s
        .audit_events(id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.body.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::LoginLocked)
            .count(),
        2
    );
    verify_chain(s, id, "alice").await;
}

pub(crate) async fn unknown_names_are_counted_and_locked_like_accounts(s: &dyn Storage) {
    let key = [9u8; 32];
    for t in 0..3 {
        assert_eq!(
            s.begin_unknown_login(key, &policy(), 100 + t)
                .await
                .unwrap(),
            LoginGate::Allowed
        );
    }
    assert_eq!(
        s.begin_unknown_login(key, &policy(), 103).await.unwrap(),
        LoginGate::Locked {
            retry_after_secs: 59
        }
    );
    assert_eq!(
        s.begin_unknown_login([8; 32], &policy(), 103)
            .await
            .unwrap(),
        LoginGate::Allowed
    );
    assert_eq!(
        s.begin_unknown_login(key, &policy(), 162).await.unwrap(),
        LoginGate::Allowed
    );
    assert_eq!(s.purge_unknown_logins(150).await.unwrap(), 1);
    assert_eq!(
        s.begin_unknown_login([8; 32], &policy(), 200)
            .await
            .unwrap(),
        LoginGate::Allowed
    );
}

pub(crate) async fn concurrent_logins_cannot_pass_the_limit(s: std::sync::Arc<dyn Storage>) {
    let id = account(&*s, "alice").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.begin_login(id, &user("alice"), &policy(), 500)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() == LoginGate::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3);
}

pub(crate) async fn concurrent_stores_lose_nothing_and_keep_the_chain(
    s: std::sync::Arc<dyn Storage>,
) {
    let id = account(&*s, "alice").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let n = name(&format!("secret-{i}"));
                store(&*s, id, &user("alice"), new(&n, 1, false, b"ct"), i).await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            StoreOutcome::Stored { version: 1, .. }
        ));
    }
    assert_eq!(
        s.list_secrets(id, &user("alice"), None, 100, 99)
            .await
            .unwrap()
            .len(),
        50
    );
    // register + 50 stores + 1 list
    assert_eq!(verify_chain(&*s, id, "alice").await, 52);
}

/// Changes that fail (here: stores into an account that does not exist) while others are
/// being written at the same time fail alone: every other change is kept, and the failed
/// ones leave nothing behind.
pub(crate) async fn a_failed_change_does_not_take_others_with_it(s: std::sync::Arc<dyn Storage>) {
    let id = account(&*s, "alice").await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let n = name(&format!("secret-{i}"));
                let target = if i % 4 == 3 { id + 1_000_000 } else { id };
                s.store_secret(
                    target,
                    &user("alice"),
                    new(&n, 1, false, b"ct"),
                    rid(),
                    enc_store,
                    i,
                )
                .await
                .map(|d| (i, d))
            })
        })
        .collect();
    let mut kept = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok((i, Done::Fresh(StoreOutcome::Stored { version: 1, .. }))) => {
                assert_ne!(i % 4, 3, "a store into no account succeeded");
                kept += 1;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert_eq!(kept, 45);
    let listed = s
        .list_secrets(id, &user("alice"), None, 100, 99)
        .await
        .unwrap();
    assert_eq!(listed.len(), 45);
    assert!(listed.iter().all(|e| {
        let i: u64 = e
            .name
            .as_str()
            .trim_start_matches("secret-")
            .parse()
            .unwrap();
        i % 4 != 3
    }));
    // register + 45 stores + 1 list
    assert_eq!(verify_chain(&*s, id, "alice").await, 47);
}

/// The quota counts live secrets: a replace does not count again, a delete frees a place,
/// and a refused store changes nothing (storage made with a quota of 3).
pub(crate) async fn the_quota_counts_live_secrets(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    for i in 0..3 {
        let n = name(&format!("s{i}"));
        assert!(matches!(
            store(s, id, &u, new(&n, 1, false, b"c"), 1).await,
            StoreOutcome::Stored { .. }
        ));
    }
    let extra = name("extra");
    assert_eq!(
        store(s, id, &u, new(&extra, 1, false, b"c"), 2).await,
        StoreOutcome::Quota
    );
    // Replacing a live secret takes no new place.
    assert!(matches!(
        store(s, id, &u, new(&name("s0"), 2, true, b"c2"), 3).await,
        StoreOutcome::Stored { version: 2, .. }
    ));
    assert!(delete(s, id, &u, &name("s1"), 4).await);
    // Deleting what is not there frees nothing.
    assert!(!delete(s, id, &u, &name("s1"), 5).await);
    assert!(matches!(
        store(s, id, &u, new(&extra, 1, false, b"c"), 6).await,
        StoreOutcome::Stored { version: 1, .. }
    ));
    assert_eq!(
        store(s, id, &u, new(&name("s1"), 2, false, b"c"), 7).await,
        StoreOutcome::Quota
    );
    let listed = s.list_secrets(id, &u, None, 100, 8).await.unwrap();
    assert_eq!(listed.len(), 3);
}

/// A login start in one step: the account is found and its guess counted, an unknown name
/// is counted under its key; both lock out alike.
pub(crate) async fn a_login_start_finds_and_counts(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    for n in 1..=3 {
        let start = s.start_login(&u, [1; 32], &policy(), 100).await.unwrap();
        assert_eq!(start.gate, LoginGate::Allowed);
        let a = start.account.expect("alice has an account");
        assert_eq!(a.id, id);
        assert_eq!(a.record, b"record");
        assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, n);
    }
    let locked = s.start_login(&u, [1; 32], &policy(), 101).await.unwrap();
    assert!(matches!(locked.gate, LoginGate::Locked { .. }));
    let nobody = user("nobody");
    for _ in 0..3 {
        let start = s
            .start_login(&nobody, [2; 32], &policy(), 100)
            .await
            .unwrap();
        assert!(start.account.is_none());
        assert_eq!(start.gate, LoginGate::Allowed);
    }
    let locked = s
        .start_login(&nobody, [2; 32], &policy(), 101)
        .await
        .unwrap();
    assert!(matches!(locked.gate, LoginGate::Locked { .. }));
    // register, 3 login_started, 1 login_locked
    assert_eq!(verify_chain(s, id, "alice").await, 5);
}

/// A successful login records its session while the account has room, and resets the
/// guess count either way.
pub(crate) async fn a_login_success_records_its_session_while_there_is_room(s: &dyn Storage) {
    let id = account(s, "alice").await;
    let u = user("alice");
    for (i, room) in [(1u8, true), (2, true), (3, false)] {
        s.begin_login(id, &u, &policy(), 100).await.unwrap();
        let keys = [i; 40];
        let new = NewSession {
            id: [i; 16],
            sealed_keys: &keys,
        };
        assert_eq!(s.login_succeeded(id, &u, new, 2, 100).await.unwrap(), room);
        assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, 0);
    }
    assert_eq!(s.session_count(id).await.unwrap(), 2);
    assert!(s.load_session([1; 16]).await.unwrap().is_some());
    assert!(s.load_session([3; 16]).await.unwrap().is_none());
}

/// Runs every contract test, each on a fresh store from `fresh(quota)` (`None`: skip the
/// test; `quota`: a secret quota other than the default).
#[macro_export]
macro_rules! storage_contract_tests {
    ($fresh:ident) => {
        #[tokio::test]
        async fn registering_a_taken_name_leaves_the_account_untouched() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::registering_a_taken_name_leaves_the_account_untouched(&*s)
                .await;
        }
        #[tokio::test]
        async fn versions_grow_across_replace_and_delete() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::versions_grow_across_replace_and_delete(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn accounts_never_see_each_others_secrets() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::accounts_never_see_each_others_secrets(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn list_pages_in_name_order_and_hides_deleted() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::list_pages_in_name_order_and_hides_deleted(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn every_change_is_in_the_chained_audit_log() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::every_change_is_in_the_chained_audit_log(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn a_repeated_request_is_applied_once_and_gets_the_first_answer() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::a_repeated_request_is_applied_once_and_gets_the_first_answer(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn sessions_are_stored_touched_ended_by_logout_and_purged() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::sessions_are_stored_touched_ended_by_logout_and_purged(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn the_guess_count_locks_and_a_success_resets_it() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::the_guess_count_locks_and_a_success_resets_it(&*s).await;
            // The store first: its connections must be gone before the schema is dropped.
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn unknown_names_are_counted_and_locked_like_accounts() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::unknown_names_are_counted_and_locked_like_accounts(&*s).await;
            drop(s);
            drop(_g);
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_logins_cannot_pass_the_limit() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::concurrent_logins_cannot_pass_the_limit(s).await;
            drop(_g);
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_stores_lose_nothing_and_keep_the_chain() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::concurrent_stores_lose_nothing_and_keep_the_chain(s).await;
            drop(_g);
        }
        #[tokio::test]
        async fn a_login_start_finds_and_counts() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::a_login_start_finds_and_counts(&*s).await;
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn a_login_success_records_its_session_while_there_is_room() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::a_login_success_records_its_session_while_there_is_room(&*s)
                .await;
            drop(s);
            drop(_g);
        }
        #[tokio::test]
        async fn the_quota_counts_live_secrets() {
            let Some((s, _g)) = $fresh(Some(3)).await else { return };
            $crate::storage::contract::the_quota_counts_live_secrets(&*s).await;
            drop(s);
            drop(_g);
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_failed_change_does_not_take_others_with_it() {
            let Some((s, _g)) = $fresh(None).await else { return };
            $crate::storage::contract::a_failed_change_does_not_take_others_with_it(s).await;
            drop(_g);
        }
    };
}
