//! The storage contract as tests, run against every backend.

use keyserver_protocol::{
    SecretName, UserName,
    audit_chain::{ChainVerifier, EventBody, EventKind, Outcome},
};

use super::{NewSecret, Storage, StoreOutcome};
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
        s.store_secret(id, &u, new(&w, 2, false, b"c1"), 1)
            .await
            .unwrap(),
        StoreOutcome::VersionMismatch { expected: 1 }
    );
    assert_eq!(
        s.store_secret(id, &u, new(&w, 1, false, b"c1"), 1)
            .await
            .unwrap(),
        StoreOutcome::Stored {
            version: 1,
            created: 1
        }
    );
    assert_eq!(
        s.store_secret(id, &u, new(&w, 2, false, b"c2"), 2)
            .await
            .unwrap(),
        StoreOutcome::Exists
    );
    assert_eq!(
        s.store_secret(id, &u, new(&w, 1, true, b"c2"), 2)
            .await
            .unwrap(),
        StoreOutcome::VersionMismatch { expected: 2 }
    );
    assert_eq!(
        s.store_secret(id, &u, new(&w, 2, true, b"c2"), 2)
            .await
            .unwrap(),
        StoreOutcome::Stored {
            version: 2,
            created: 2
        }
    );
    let got = s.retrieve_secret(id, &u, &w, 3).await.unwrap().unwrap();
    assert_eq!((got.version, got.sealed.as_slice()), (2, &b"c2"[..]));
    assert!(s.delete_secret(id, &u, &w, 4).await.unwrap());
    assert!(!s.delete_secret(id, &u, &w, 4).await.unwrap());
    assert!(s.retrieve_secret(id, &u, &w, 5).await.unwrap().is_none());
    assert_eq!(
        s.store_secret(id, &u, new(&w, 1, false, b"c3"), 6)
            .await
            .unwrap(),
        StoreOutcome::VersionMismatch { expected: 3 }
    );
    assert_eq!(
        s.store_secret(id, &u, new(&w, 3, false, b"c3"), 6)
            .await
            .unwrap(),
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
    s.store_secret(a, &user("alice"), new(&w, 1, false, b"alice's"), 1)
        .await
        .unwrap();
    assert!(
        s.retrieve_secret(b, &user("bob"), &w, 2)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.delete_secret(b, &user("bob"), &w, 2).await.unwrap());
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
        s.store_secret(id, &u, new(&n, 1, false, &[0u8; 50]), i)
            .await
            .unwrap();
    }
    s.delete_secret(id, &u, &name("s3"), 20).await.unwrap();
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
    s.login_finished(id, &u, false, 11).await.unwrap();
    assert_eq!(
        s.begin_login(id, &u, &policy(), 12).await.unwrap(),
        LoginGate::Allowed
    );
    assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, 2);
    s.login_finished(id, &u, true, 13).await.unwrap();
    assert_eq!(s.find_account(&u).await.unwrap().unwrap().failed_logins, 0);
    s.store_secret(id, &u, new(&name("k"), 1, false, b"x"), 14)
        .await
        .unwrap();
    s.retrieve_secret(id, &u, &name("k"), 15).await.unwrap();
    s.change_password(id, &u, b"new record", b"new key", 16)
        .await
        .unwrap();
    s.record_event(id, &u, EventBody::new(EventKind::Logout, Outcome::Ok), 17)
        .await
        .unwrap();
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
    s.login_finished(id, &u, true, 283).await.unwrap();
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
                s.store_secret(id, &user("alice"), new(&n, 1, false, b"ct"), i)
                    .await
                    .unwrap()
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

/// Runs every contract test, each on a fresh store from `fresh`.
#[macro_export]
macro_rules! storage_contract_tests {
    ($fresh:expr) => {
        #[tokio::test]
        async fn registering_a_taken_name_leaves_the_account_untouched() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::registering_a_taken_name_leaves_the_account_untouched(&*s)
                .await;
        }
        #[tokio::test]
        async fn versions_grow_across_replace_and_delete() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::versions_grow_across_replace_and_delete(&*s).await;
        }
        #[tokio::test]
        async fn accounts_never_see_each_others_secrets() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::accounts_never_see_each_others_secrets(&*s).await;
        }
        #[tokio::test]
        async fn list_pages_in_name_order_and_hides_deleted() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::list_pages_in_name_order_and_hides_deleted(&*s).await;
        }
        #[tokio::test]
        async fn every_change_is_in_the_chained_audit_log() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::every_change_is_in_the_chained_audit_log(&*s).await;
        }
        #[tokio::test]
        async fn the_guess_count_locks_and_a_success_resets_it() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::the_guess_count_locks_and_a_success_resets_it(&*s).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_logins_cannot_pass_the_limit() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::concurrent_logins_cannot_pass_the_limit(s).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_stores_lose_nothing_and_keep_the_chain() {
            let (s, _g) = $fresh.await;
            $crate::storage::contract::concurrent_stores_lose_nothing_and_keep_the_chain(s).await;
        }
    };
}
