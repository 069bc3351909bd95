//! The storage contract as tests: every row primitive of [`Tx`] and what a [`Backend`]
//! promises about transactions, run against every backend.
//!
//! Each test is written once, with [`on_every_backend!`], which makes it a module holding one
//! test per backend: a test cannot be forgotten on one of them. The rules above storage
//! (what a store decides, the audit chain, the lockout) are tested once, through the
//! service, in `keyserver/tests/service/`, where the tests that depend on a backend's
//! concurrency run on both as well.

use std::sync::Arc;

use keyserver_protocol::{
    NameTag, UserName,
    audit_chain::{AuditEvent, EventBody, EventKind, Outcome},
};

use super::{
    AccountId, AccountRow, Durability, Guesses, HeldKeyRow, KeyUsage, NewAccount, RequestId,
    SecretRow, SessionRow, SessionState, Storage, StorageError, StoredSession, Tx, UnknownRow,
    postgres::PostgresBackend, sqlite::SqliteBackend,
};

/// A fresh database of each kind, and what must live as long as it.
pub(crate) enum Scratch {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] keyserver_tests::PgSchema),
}

pub(crate) async fn sqlite() -> (Storage, Scratch) {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("test.db"))
        .await
        .unwrap();
    (Storage::new(Arc::new(b)), Scratch::Sqlite(dir))
}

pub(crate) async fn postgres() -> Option<(Storage, Scratch)> {
    let schema = keyserver_tests::PgSchema::create()?;
    let b = PostgresBackend::connect(&schema.url()).await.unwrap();
    Some((Storage::new(Arc::new(b)), Scratch::Postgres(schema)))
}

/// Defines a test once, as a module with one test per backend: `sqlite` always, `postgres`
/// when `KEYSERVER_TEST_DATABASE_URL` is set (and a loud `SKIPPED` otherwise).
macro_rules! on_every_backend {
    ($(#[$meta:meta])* async fn $name:ident($s:ident: Storage) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($s: Storage) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (s, _scratch) = super::sqlite().await;
                body(s).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some((s, _scratch)) = super::postgres().await else {
                    return;
                };
                body(s).await;
            }
        }
    };
}

fn user(n: &str) -> UserName {
    UserName::new(n).unwrap()
}

fn tag(b: u8) -> NameTag {
    NameTag([b; 32])
}

/// Runs one write job.
async fn write<R, F>(s: &Storage, f: F) -> R
where
    R: Send + 'static,
    F: for<'t> FnOnce(&'t mut dyn Tx) -> super::BoxFuture<'t, Result<R, StorageError>>
        + Send
        + 'static,
{
    s.write(Durability::Disk, f).await.unwrap()
}

async fn new_account(s: &Storage, n: &str) -> AccountRow {
    let u = user(n);
    write(s, move |tx| {
        Box::pin(async move {
            let new = NewAccount {
                user: &u,
                record: b"record",
                credential_id: b"credential",
                sealed_storage_key: b"sealed key",
                created: 1000,
            };
            Ok(tx.insert_account(&new).await?.unwrap())
        })
    })
    .await
}

fn event(seq: u64) -> AuditEvent {
    AuditEvent {
        seq,
        time: 1000 + i64::try_from(seq).unwrap(),
        body: EventBody::about(EventKind::Store, &tag(7), Outcome::Ok).at_version(seq),
        hash: [u8::try_from(seq % 256).unwrap(); 32],
    }
}

on_every_backend! {
    async fn an_account_name_is_taken_once(s: Storage) {
        let a = new_account(&s, "alice").await;
        assert_eq!(a.user, user("alice"));
        assert_eq!((a.audit_seq, a.audit_head, a.live_secrets), (0, None, 0));
        assert_eq!(a.epoch, 1, "a new account starts at epoch 1");
        assert_eq!(a.guesses, Guesses::default());
        let again = write(&s, |tx| {
            Box::pin(async move {
                let u = user("alice");
                let new = NewAccount {
                    user: &u,
                    record: b"other",
                    credential_id: b"other",
                    sealed_storage_key: b"other",
                    created: 2000,
                };
                tx.insert_account(&new).await
            })
        })
        .await;
        assert!(again.is_none());
        let (by_name, by_id, nobody, credentials) = s
            .read(move |tx| {
                Box::pin(async move {
                    Ok((
                        tx.account_by_name(&user("alice")).await?,
                        tx.account(a.id).await?,
                        tx.account_by_name(&user("nobody")).await?,
                        tx.credentials(a.id).await?.unwrap(),
                    ))
                })
            })
            .await
            .unwrap();
        assert_eq!(by_name.as_ref(), Some(&a));
        assert_eq!(by_id, by_name);
        assert_eq!(credentials.record, b"record");
        assert_eq!(credentials.credential_id, b"credential");
        assert_eq!(credentials.sealed_storage_key, b"sealed key");
        assert!(nobody.is_none());
    }
}

on_every_backend! {
    async fn every_column_of_an_account_row_is_saved(s: Storage) {
        let mut a = new_account(&s, "alice").await;
        a.guesses = Guesses {
            failed: 3,
            last_attempt: Some(1234),
            lockout_logged: true,
        };
        a.audit_seq = 7;
        a.audit_head = Some([9; 32]);
        a.live_secrets = 5;
        a.epoch = 4;
        let saved = a.clone();
        let new = super::super::Credentials {
            record: b"new record".to_vec(),
            credential_id: b"new credential".to_vec(),
            sealed_storage_key: b"new key".to_vec(),
        };
        let c = new.clone();
        write(&s, move |tx| {
            Box::pin(async move {
                tx.save_account(&saved).await?;
                tx.set_credentials(saved.id, &c).await
            })
        })
        .await;
        let id = a.id;
        let (back, credentials) = s
            .read(move |tx| {
                Box::pin(async move {
                    Ok((super::super::account(tx, id).await?, tx.credentials(id).await?))
                })
            })
            .await
            .unwrap();
        assert_eq!(back, a);
        assert_eq!(credentials, Some(new));
    }
}

on_every_backend! {
    async fn events_come_back_in_order_after_a_position_and_per_account(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let b = new_account(&s, "bob").await.id;
        write(&s, move |tx| {
            Box::pin(async move {
                for seq in 1..=10 {
                    tx.insert_event(a, &event(seq)).await?;
                }
                tx.insert_event(b, &event(1)).await
            })
        })
        .await;
        let (page, rest, bobs) = s
            .read(move |tx| {
                Box::pin(async move {
                    Ok((
                        tx.events(a, 3, 4).await?,
                        tx.events(a, 7, 100).await?,
                        tx.events(b, 0, 100).await?,
                    ))
                })
            })
            .await
            .unwrap();
        assert_eq!(page, (4..=7).map(event).collect::<Vec<_>>());
        assert_eq!(rest, (8..=10).map(event).collect::<Vec<_>>());
        assert_eq!(bobs, vec![event(1)]);
        // A seq is an event's key within its account.
        let dup = s
            .write(Durability::Disk, move |tx| {
                Box::pin(async move { tx.insert_event(a, &event(3)).await })
            })
            .await;
        assert!(dup.is_err());
    }
}

on_every_backend! {
    async fn secrets_keep_their_row_when_deleted_and_list_in_tag_byte_order(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let b = new_account(&s, "bob").await.id;
        let tags = [0x10u8, 0x01, 0xf0, 0x20];
        let row = |version, sealed: Option<Vec<u8>>, n: u8| SecretRow {
            sealed_name: vec![n; 50],
            version,
            sealed,
            created: 5,
        };
        write(&s, move |tx| {
            Box::pin(async move {
                for (i, t) in tags.iter().enumerate() {
                    tx.put_secret(a, &tag(*t), &row(1, Some(vec![0; 41 + i]), *t)).await?;
                }
                tx.put_secret(a, &tag(0x30), &row(4, None, 0x30)).await?;
                tx.put_secret(b, &tag(0x01), &row(1, Some(vec![1]), 0x01)).await
            })
        })
        .await;
        let (gone, missing, first, second, all, rows) = s
            .read(move |tx| {
                Box::pin(async move {
                    Ok((
                        tx.secret(a, &tag(0x30)).await?,
                        tx.secret(a, &tag(0x99)).await?,
                        tx.secrets(a, None, 2, false).await?,
                        tx.secrets(a, Some(&tag(0x10)), 10, false).await?,
                        tx.secrets(a, None, 10, true).await?,
                        tx.count_secret_rows(a).await?,
                    ))
                })
            })
            .await
            .unwrap();
        assert_eq!(gone, Some(row(4, None, 0x30)));
        assert!(missing.is_none());
        let listed = |v: &[super::super::SecretListing]| {
            v.iter()
                .map(|l| (l.tag.0[0], l.sealed_len, l.sealed_name[0]))
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(&first), [(0x01, Some(42), 0x01), (0x10, Some(41), 0x10)]);
        assert_eq!(listed(&second), [(0x20, Some(44), 0x20), (0xf0, Some(43), 0xf0)]);
        // With the deleted ones: in order, the deleted one without a size.
        let all: Vec<(u8, Option<u64>)> = all.iter().map(|l| (l.tag.0[0], l.sealed_len)).collect();
        assert_eq!(
            all,
            [(0x01, Some(42)), (0x10, Some(41)), (0x20, Some(44)), (0x30, None), (0xf0, Some(43))]
        );
        assert_eq!(rows, 5);
    }
}

on_every_backend! {
    async fn a_response_is_recorded_once_per_request(s: Storage) {
        let req = RequestId {
            session: [7; 16],
            seq: 1,
        };
        let other = RequestId { seq: 2, ..req };
        write(&s, move |tx| Box::pin(async move { tx.record(req, b"first", 10).await })).await;
        let twice = s
            .write(Durability::Disk, move |tx| {
                Box::pin(async move { tx.record(req, b"second", 11).await })
            })
            .await;
        assert!(twice.is_err(), "a request's response is recorded once");
        let (r, o) = s
            .read(move |tx| {
                Box::pin(async move { Ok((tx.recorded(req).await?, tx.recorded(other).await?)) })
            })
            .await
            .unwrap();
        assert_eq!(r.as_deref(), Some(&b"first"[..]));
        assert!(o.is_none());
        let purged = write(&s, |tx| Box::pin(async move { tx.purge_responses(11).await })).await;
        assert_eq!(purged, 1);
    }
}

on_every_backend! {
    async fn sessions_are_stored_counted_touched_deleted_and_purged(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let row = move |id: u8, created: i64| SessionRow {
            id: [id; 16],
            account: a,
            sealed_keys: vec![id; 92],
            created,
            last_used: created,
            reauthed_at: None,
            epoch: 1,
        };
        write(&s, move |tx| {
            Box::pin(async move {
                tx.insert_session(&row(1, 100)).await?;
                tx.insert_session(&row(2, 200)).await?;
                tx.insert_session(&row(3, 300)).await
            })
        })
        .await;
        let (stored, count) = s
            .read(move |tx| {
                Box::pin(async move { Ok((tx.session([1; 16]).await?, tx.count_sessions(a).await?)) })
            })
            .await
            .unwrap();
        let expected = StoredSession {
            row: row(1, 100),
            user: user("alice"),
            epoch: 1,
        };
        assert_eq!(stored, Some(expected));
        assert_eq!(count, 3);
        let (touched, gone, deleted, again) = write(&s, |tx| {
            Box::pin(async move {
                Ok((
                    tx.touch_session([1; 16], 500).await?,
                    tx.touch_session([9; 16], 500).await?,
                    tx.delete_session([2; 16]).await?,
                    tx.delete_session([2; 16]).await?,
                ))
            })
        })
        .await;
        assert_eq!((touched, gone, deleted, again), (true, false, true, false));
        // Created before 250 or unused since 400: session 3 (created 300, used 300) goes
        // by the idle rule, session 1 (created 100, used 500) by the lifetime rule.
        let purged = write(&s, |tx| Box::pin(async move { tx.purge_sessions(50, 400).await })).await;
        assert_eq!(purged, 1);
        let left = s
            .read(move |tx| Box::pin(async move { tx.count_sessions(a).await }))
            .await
            .unwrap();
        assert_eq!(left, 1);
        let purged = write(&s, |tx| Box::pin(async move { tx.purge_sessions(250, 0).await })).await;
        assert_eq!(purged, 1);
    }
}

on_every_backend! {
    async fn an_unknown_name_starts_empty_and_is_saved_with_its_events(s: Storage) {
        let key = [5u8; 32];
        let u = write(&s, move |tx| Box::pin(async move { tx.unknown_name(&key).await })).await;
        assert_eq!(u, UnknownRow::default());
        let event = |seq| AuditEvent {
            seq,
            time: 77,
            body: EventBody::new(EventKind::LoginFailed, Outcome::Failed),
            hash: [u8::try_from(seq).unwrap(); 32],
        };
        let saved = UnknownRow {
            guesses: Guesses {
                failed: 2,
                last_attempt: Some(77),
                lockout_logged: true,
            },
            seq: 2,
            head: Some([2; 32]),
        };
        write(&s, move |tx| {
            Box::pin(async move {
                tx.insert_unknown_event(&key, &event(1)).await?;
                tx.insert_unknown_event(&key, &event(2)).await?;
                tx.save_unknown_name(&key, &saved).await
            })
        })
        .await;
        let u = write(&s, move |tx| Box::pin(async move { tx.unknown_name(&key).await })).await;
        assert_eq!(u, saved);
        // An event is never written twice.
        let again = s
            .write(Durability::Disk, move |tx| {
                Box::pin(async move { tx.insert_unknown_event(&key, &event(2)).await })
            })
            .await;
        assert!(again.is_err());
        // Purged with its events: the same name starts over from nothing.
        let purged =
            write(&s, |tx| Box::pin(async move { tx.purge_unknown_names(78).await })).await;
        assert_eq!(purged, 1);
        let u = write(&s, move |tx| Box::pin(async move { tx.unknown_name(&key).await })).await;
        assert_eq!(u, UnknownRow::default());
        write(&s, move |tx| {
            Box::pin(async move { tx.insert_unknown_event(&key, &event(1)).await })
        })
        .await;
    }
}

on_every_backend! {
    /// An account read in a job, by itself or with its session's state, is the row as the
    /// job last saved it, and a job after a failed one sees nothing of the failed one's
    /// saves (a backend may keep the row it read, never past its job).
    async fn an_account_read_in_a_job_is_the_row_as_the_job_left_it(s: Storage) {
        let a = new_account(&s, "alice").await;
        let (id, session) = (a.id, [4; 16]);
        let row = SessionRow {
            id: session,
            account: id,
            sealed_keys: vec![4; 92],
            created: 100,
            last_used: 100,
            reauthed_at: None,
            epoch: 1,
        };
        write(&s, move |tx| Box::pin(async move { tx.insert_session(&row).await })).await;
        let store = s.clone();
        let bump = move |fail: bool| {
            let s = store.clone();
            async move {
                s.write_for(id, Durability::Disk, move |tx| {
                    Box::pin(async move {
                        // The account first, then the session's state, and the account
                        // again: a row kept from an earlier job would show in the first.
                        let mut a = super::super::account(tx, id).await?;
                        let state = tx.session_state(session).await?.unwrap();
                        assert_eq!(state.account_epoch, a.epoch);
                        assert_eq!(super::super::account(tx, id).await?, a);
                        a.audit_seq += 1;
                        a.epoch += 1;
                        tx.save_account(&a).await?;
                        let again = super::super::account(tx, id).await?;
                        assert_eq!(again, a);
                        let state = tx.session_state(session).await?.unwrap();
                        assert_eq!(state.account_epoch, a.epoch);
                        assert_eq!(super::super::account(tx, id).await?, a);
                        if fail {
                            return Err(StorageError::Unavailable("this job fails".into()));
                        }
                        Ok(a)
                    })
                })
                .await
            }
        };
        let first = bump(false).await.unwrap();
        // Its own failure, not an assertion failing inside it (which fails a job too).
        assert!(
            matches!(bump(true).await, Err(StorageError::Unavailable(m)) if m == "this job fails")
        );
        let third = bump(false).await.unwrap();
        assert_eq!(first.audit_seq, a.audit_seq + 1);
        assert_eq!(third.audit_seq, first.audit_seq + 1, "the failed job's save is gone");
        let back = s
            .read(move |tx| {
                Box::pin(async move {
                    let state = tx.session_state(session).await?.unwrap();
                    Ok((state, super::super::account(tx, id).await?))
                })
            })
            .await
            .unwrap();
        assert_eq!(back.1, third);
        assert_eq!(back.0.account_epoch, third.epoch);
    }
}

on_every_backend! {
    /// A job that fails after writing leaves nothing behind, and jobs committed beside it
    /// (on SQLite, in the same batch) are kept.
    async fn a_failed_job_changes_nothing_and_takes_no_other_job_with_it(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let mut jobs = Vec::new();
        for i in 0..40u8 {
            let s = s.clone();
            jobs.push(tokio::spawn(async move {
                s.write(Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let row = SecretRow {
                            sealed_name: vec![i],
                            version: 1,
                            sealed: Some(vec![i]),
                            created: 1,
                        };
                        tx.put_secret(a, &tag(i), &row).await?;
                        if i % 2 == 1 {
                            return Err(StorageError::Unavailable("this job fails".into()));
                        }
                        Ok(())
                    })
                })
                .await
            }));
        }
        for (i, j) in jobs.into_iter().enumerate() {
            assert_eq!(j.await.unwrap().is_ok(), i % 2 == 0, "job {i}");
        }
        let listed = s
            .read(move |tx| Box::pin(async move { tx.secrets(a, None, 100, true).await }))
            .await
            .unwrap();
        let got: Vec<u8> = listed.iter().map(|l| l.tag.0[0]).collect();
        let want: Vec<u8> = (0..40).step_by(2).collect();
        assert_eq!(got, want);
    }
}

on_every_backend! {
    /// Jobs of sessions (`write_for`, which Postgres commits in groups) on several accounts
    /// at once: a job that fails, one whose statement the database refuses, and one that
    /// panics each leave nothing behind and take no other job with them; every other job
    /// is committed, and each account's read-modify-writes lose no update.
    async fn grouped_jobs_fail_alone_and_lose_no_update(s: Storage) {
        let mut accounts = Vec::new();
        for n in 0..6 {
            accounts.push(new_account(&s, &format!("user{n}")).await.id);
        }
        let mut jobs = Vec::new();
        for i in 0..120u8 {
            let (s, a) = (s.clone(), accounts[usize::from(i) % accounts.len()]);
            jobs.push(tokio::spawn(async move {
                s.write_for(a, Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let mut row = super::super::account(tx, a).await?;
                        row.live_secrets += 1;
                        tx.save_account(&row).await?;
                        let secret = SecretRow {
                            sealed_name: vec![i],
                            version: 1,
                            sealed: Some(vec![i]),
                            created: 1,
                        };
                        tx.put_secret(a, &tag(i), &secret).await?;
                        // The job reads back what it saved (from the database or from
                        // what the transaction holds).
                        let again = super::super::account(tx, a).await?;
                        assert_eq!(again.live_secrets, row.live_secrets);
                        match i % 8 {
                            1 => Err(StorageError::Unavailable("this job fails".into())),
                            3 => {
                                // A statement the database refuses: the same request
                                // recorded twice. Ok if it was not refused, which the
                                // test below counts as a failure.
                                let req = RequestId {
                                    session: [i; 16],
                                    seq: 1,
                                };
                                tx.record(req, b"answer", 1).await?;
                                tx.record(req, b"answer", 1).await?;
                                Ok(())
                            }
                            5 => panic!("a job that panics"),
                            _ => Ok(()),
                        }
                    })
                })
                .await
            }));
        }
        let mut kept = vec![0u64; accounts.len()];
        for (i, j) in jobs.into_iter().enumerate() {
            let ok = j.await.unwrap().is_ok();
            assert_eq!(ok, !matches!(i % 8, 1 | 3 | 5), "job {i}");
            if ok {
                kept[i % accounts.len()] += 1;
            }
        }
        for (n, a) in accounts.iter().copied().enumerate() {
            let (row, listed) = s
                .read(move |tx| {
                    Box::pin(async move {
                        Ok((
                            super::super::account(tx, a).await?,
                            tx.secrets(a, None, 200, true).await?,
                        ))
                    })
                })
                .await
                .unwrap();
            assert_eq!(row.live_secrets, kept[n], "account {n}");
            assert_eq!(listed.len() as u64, kept[n], "account {n}");
            for l in listed {
                assert!(!matches!(l.tag.0[0] % 8, 1 | 3 | 5));
            }
        }
    }
}

on_every_backend! {
    /// Reading an account in a write job locks it until the job ends: concurrent
    /// read-modify-write jobs on one account lose no update.
    async fn the_jobs_of_one_account_are_serialised(s: Storage) {
        let a: AccountId = new_account(&s, "alice").await.id;
        let mut jobs = Vec::new();
        for _ in 0..50 {
            let s = s.clone();
            jobs.push(tokio::spawn(async move {
                s.write(Durability::Disk, move |tx| {
                    Box::pin(async move {
                        let mut row = super::super::account(tx, a).await?;
                        row.live_secrets += 1;
                        tx.save_account(&row).await
                    })
                })
                .await
                .unwrap();
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        let row = s
            .read(move |tx| Box::pin(async move { super::super::account(tx, a).await }))
            .await
            .unwrap();
        assert_eq!(row.live_secrets, 50);
    }
}

on_every_backend! {
    async fn a_sessions_reauth_is_recorded_and_other_sessions_end(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let b = new_account(&s, "bob").await.id;
        let row = move |id: u8, account| SessionRow {
            id: [id; 16],
            account,
            sealed_keys: vec![id; 92],
            created: 100,
            last_used: 100,
            reauthed_at: None,
            epoch: 1,
        };
        write(&s, move |tx| {
            Box::pin(async move {
                for (id, acct) in [(1, a), (2, a), (3, a), (4, b)] {
                    tx.insert_session(&row(id, acct)).await?;
                }
                tx.set_session_reauth([1; 16], Some(150)).await
            })
        })
        .await;
        let (one, two, none) = s
            .read(|tx| {
                Box::pin(async move {
                    Ok((
                        tx.session_state([1; 16]).await?,
                        tx.session_state([2; 16]).await?,
                        tx.session_state([9; 16]).await?,
                    ))
                })
            })
            .await
            .unwrap();
        let state = |reauthed_at| SessionState {
            reauthed_at,
            epoch: 1,
            account_epoch: 1,
        };
        assert_eq!((one, two, none), (Some(state(Some(150))), Some(state(None)), None));
        let ended = write(&s, move |tx| {
            Box::pin(async move { tx.delete_other_sessions(a, [1; 16]).await })
        })
        .await;
        assert_eq!(ended, 2);
        let (count_a, count_b, stored) = s
            .read(move |tx| {
                Box::pin(async move {
                    Ok((
                        tx.count_sessions(a).await?,
                        tx.count_sessions(b).await?,
                        tx.session([1; 16]).await?,
                    ))
                })
            })
            .await
            .unwrap();
        assert_eq!((count_a, count_b), (1, 1));
        assert_eq!(stored.unwrap().row.reauthed_at, Some(150));
        // A session moved into another epoch, with its keys sealed again.
        let moved = write(&s, move |tx| {
            Box::pin(async move {
                tx.set_session_epoch([1; 16], 2, &[7; 92]).await?;
                Ok((tx.session_state([1; 16]).await?, tx.session([1; 16]).await?))
            })
        })
        .await;
        assert_eq!(moved.0.map(|s| (s.epoch, s.account_epoch)), Some((2, 1)));
        let row = moved.1.unwrap().row;
        assert_eq!((row.epoch, row.sealed_keys), (2, vec![7; 92]));
    }
}

on_every_backend! {
    /// Staged secrets match the live ones only name for name and version for version, and
    /// applying them replaces exactly those ciphertexts.
    async fn staged_secrets_are_counted_compared_applied_and_purged(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let sid = [5u8; 16];
        write(&s, move |tx| {
            Box::pin(async move {
                tx.insert_session(&SessionRow {
                    id: sid,
                    account: a,
                    sealed_keys: vec![1; 92],
                    created: 1,
                    last_used: 1,
                    reauthed_at: None,
                    epoch: 1,
                })
                .await?;
                for (t, v, live) in [(1u8, 1, true), (2, 3, true), (3, 2, false)] {
                    let row = SecretRow {
                        sealed_name: vec![t],
                        version: v,
                        sealed: live.then(|| b"old".to_vec()),
                        created: 1,
                    };
                    tx.put_secret(a, &tag(t), &row).await?;
                }
                Ok(())
            })
        })
        .await;
        // Tag t moves to tag t + 100; a live secret gets a new ciphertext, a deleted one none.
        let staged = |t: u8, v: u64, live: bool| super::super::StagedRow {
            tag: tag(t),
            new_tag: tag(t + 100),
            sealed_name: vec![t + 100],
            version: v,
            sealed: live.then(|| vec![b'n', t]),
        };
        let stage = |t: u8, v: u64, live: bool| {
            let s = s.clone();
            async move {
                write(&s, move |tx| {
                    Box::pin(async move {
                        let row = staged(t, v, live);
                        tx.stage_secret(sid, a, &row).await?;
                        Ok((tx.staged_count(sid).await?, tx.staged_mismatches(sid, a).await?))
                    })
                })
                .await
            }
        };
        // 1 staged, 2 and 3 missing: two mismatches.
        assert_eq!(stage(1, 1, true).await, (1, 2));
        // 2 at a stale version: still a mismatch each way.
        assert_eq!(stage(2, 2, true).await, (2, 3));
        // 2 staged again at its version replaces the stale one.
        assert_eq!(stage(2, 3, true).await, (2, 1));
        // The deleted one staged as live is a mismatch; as deleted, none left.
        assert_eq!(stage(3, 2, true).await, (3, 2));
        assert_eq!(stage(3, 2, false).await, (3, 0));
        let applied = write(&s, move |tx| Box::pin(async move { tx.apply_staged(sid, a).await }))
            .await;
        assert_eq!(applied, 3);
        let (one, old, gone) = s
            .read(move |tx| {
                Box::pin(async move {
                    Ok((
                        tx.secret(a, &tag(101)).await?,
                        tx.secret(a, &tag(1)).await?,
                        tx.secret(a, &tag(103)).await?,
                    ))
                })
            })
            .await
            .unwrap();
        let one = one.unwrap();
        assert_eq!((one.sealed.as_deref(), one.sealed_name, one.version), (Some(&b"n\x01"[..]), vec![101], 1));
        assert!(old.is_none());
        let gone = gone.unwrap();
        assert_eq!((gone.sealed, gone.version), (None, 2));
        // Staged rows outlive nothing: once their session is gone, a purge takes them.
        let purged = write(&s, move |tx| {
            Box::pin(async move {
                tx.delete_session(sid).await?;
                tx.purge_staged().await
            })
        })
        .await;
        assert_eq!(purged, 3);
    }
}

on_every_backend! {
    /// The keyring: written once, then only in place of the generation it replaces.
    async fn the_keyring_is_written_once_and_replaced_only_from_its_generation(s: Storage) {
        let read = |s: &Storage| {
            let s = s.clone();
            async move { write(&s, |tx| Box::pin(async move { tx.keyring().await })).await }
        };
        let put = |s: &Storage, previous: Option<u64>, generation: u64, body: &'static [u8]| {
            let s = s.clone();
            async move {
                write(&s, move |tx| {
                    Box::pin(async move { tx.put_keyring(previous, generation, body).await })
                })
                .await
            }
        };
        assert_eq!(read(&s).await, None);
        assert!(put(&s, None, 1, b"first").await);
        // A second first one (another instance raced this one) is not written.
        assert!(!put(&s, None, 1, b"other").await);
        assert_eq!(read(&s).await, Some((1, b"first".to_vec())));
        assert!(put(&s, Some(1), 2, b"rewrapped").await);
        // A re-wrapping from a generation that is gone is not written.
        assert!(!put(&s, Some(1), 2, b"stale").await);
        assert_eq!(read(&s).await, Some((2, b"rewrapped".to_vec())));
        let has = |s: &Storage| {
            let s = s.clone();
            async move { write(&s, |tx| Box::pin(async move { tx.has_accounts().await })).await }
        };
        assert!(!has(&s).await);
        new_account(&s, "alice").await;
        assert!(has(&s).await);
    }
}

on_every_backend! {
    /// Checkpoints: kept once per position, listed newest first, pruned to the newest,
    /// dropped all at once; an event's hash by its seq.
    async fn checkpoints_are_kept_listed_newest_first_pruned_and_dropped(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let b = new_account(&s, "bob").await.id;
        let cp = |seq: u64, mac: u8| keyserver_protocol::ops::StoredCheckpoint {
            checkpoint: keyserver_protocol::checkpoint::Checkpoint {
                position: keyserver_protocol::audit_chain::AuditPosition {
                    seq,
                    head: [u8::try_from(seq).unwrap(); 32],
                },
                mac: [mac; 32],
            },
            time: i64::try_from(seq).unwrap(),
        };
        write(&s, move |tx| {
            Box::pin(async move {
                for seq in 1..=10 {
                    tx.put_checkpoint(a, &cp(seq, 1)).await?;
                }
                // The same position again is kept as it was.
                tx.put_checkpoint(a, &cp(10, 2)).await?;
                tx.put_checkpoint(b, &cp(3, 1)).await?;
                tx.prune_checkpoints(a, 8).await
            })
        })
        .await;
        let listed = write(&s, move |tx| Box::pin(async move { tx.checkpoints(a, 100).await })).await;
        let seqs: Vec<u64> = listed.iter().map(|c| c.checkpoint.position.seq).collect();
        assert_eq!(seqs, (3..=10).rev().collect::<Vec<_>>());
        assert_eq!(listed[0], cp(10, 1));
        let two = write(&s, move |tx| Box::pin(async move { tx.checkpoints(a, 2).await })).await;
        assert_eq!(two.len(), 2);
        write(&s, move |tx| Box::pin(async move { tx.delete_checkpoints(a).await })).await;
        let (left_a, left_b) = write(&s, move |tx| {
            Box::pin(async move { Ok((tx.checkpoints(a, 100).await?, tx.checkpoints(b, 100).await?)) })
        })
        .await;
        assert!(left_a.is_empty());
        assert_eq!(left_b, vec![cp(3, 1)]);
        // Events by seq.
        let (first, none) = write(&s, move |tx| {
            Box::pin(async move {
                let mut acct = crate::storage::account(tx, a).await?;
                crate::audit::append(tx, &mut acct, EventBody::new(EventKind::List, Outcome::Ok), 1)
                    .await?;
                tx.save_account(&acct).await?;
                Ok((
                    (tx.event_hash(a, 1).await?, acct.audit_head),
                    tx.event_hash(a, 99).await?,
                ))
            })
        })
        .await;
        assert_eq!(first.0, first.1);
        assert!(first.0.is_some());
        assert_eq!(none, None);
    }
}

/// A database that holds secrets stored under protocol 2 (secret names in clear) is refused
/// by the migration to sealed names, with a message that says why, and nothing is changed.
#[tokio::test]
async fn a_database_with_protocol_2_secrets_is_refused_by_the_sealed_names_migration() {
    use std::borrow::Cow;

    use sqlx::migrate::Migrator;
    let before = |all: &Migrator| Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < 12)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    let insert = |blob: fn(&str) -> String| {
        [
            format!(
                "INSERT INTO accounts (id, user_name, record, sealed_storage_key, audit_head, \
                 credential_id, created_at) VALUES (1, 'alice', {}, {}, {}, {}, 1)",
                blob("72"),
                blob("6b"),
                blob("68"),
                blob("63")
            ),
            format!(
                "INSERT INTO secrets (account_id, name, version, sealed, created_at) \
                 VALUES (1, 'wallet', 1, {}, 1)",
                blob("73")
            ),
        ]
    };
    // SQLite.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    {
        use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
        let mut c = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        before(&super::sqlite::MIGRATOR).run(&mut c).await.unwrap();
        for q in insert(|h| format!("X'{h}'")) {
            sqlx::query(&q).execute(&mut c).await.unwrap();
        }
    }
    let e = SqliteBackend::open(&db).await.unwrap_err().to_string();
    assert!(e.contains("protocol 2"), "{e}");
    // Postgres.
    let Some(schema) = keyserver_tests::PgSchema::create() else {
        return;
    };
    {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&schema.url()).await.unwrap();
        before(&super::postgres::MIGRATOR)
            .run(&mut c)
            .await
            .unwrap();
        for q in insert(|h| format!("'\\x{h}'::BYTEA")) {
            sqlx::query(&q).execute(&mut c).await.unwrap();
        }
    }
    let e = PostgresBackend::connect(&schema.url())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("protocol 2"), "{e}");
}

fn held_key(name: &str, public: u8) -> HeldKeyRow {
    HeldKeyRow {
        name: keyserver_protocol::KeyName::new(name).unwrap(),
        algorithm: keyserver_protocol::signing::Algorithm::Secp256k1,
        public_key: vec![public; 33],
        sealed_key: vec![public; 61],
        exportable: public.is_multiple_of(2),
        created: 1000 + i64::from(public),
        usage: KeyUsage::default(),
    }
}

on_every_backend! {
    async fn a_held_key_name_is_taken_once_per_account_and_listed_bytewise(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let b = new_account(&s, "bob").await.id;
        // "Z" < "a" < "é" bytewise, whatever a collation would say.
        let names = ["a", "Z", "\u{e9}", "b"];
        let inserted = write(&s, move |tx| {
            Box::pin(async move {
                let mut inserted = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    inserted.push(tx.insert_held_key(a, &held_key(n, u8::try_from(i).unwrap())).await?);
                }
                // Taken in alice's account, free in bob's.
                inserted.push(tx.insert_held_key(a, &held_key("a", 9)).await?);
                inserted.push(tx.insert_held_key(b, &held_key("a", 9)).await?);
                Ok(inserted)
            })
        })
        .await;
        assert_eq!(inserted, [true, true, true, true, false, true]);
        let (all, page, after, count, one, none) = s
            .read(move |tx| {
                Box::pin(async move {
                    let k = |n: &str| keyserver_protocol::KeyName::new(n).unwrap();
                    Ok((
                        tx.held_keys(a, None, 10).await?,
                        tx.held_keys(a, None, 2).await?,
                        tx.held_keys(a, Some(&k("a")), 10).await?,
                        tx.count_held_keys(a).await?,
                        tx.held_key(a, &k("a")).await?,
                        tx.held_key(a, &k("missing")).await?,
                    ))
                })
            })
            .await
            .unwrap();
        let names_of = |rows: &[HeldKeyRow]| {
            rows.iter().map(|r| r.name.as_str().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names_of(&all), ["Z", "a", "b", "\u{e9}"]);
        assert_eq!(names_of(&page), ["Z", "a"]);
        assert_eq!(names_of(&after), ["b", "\u{e9}"]);
        assert_eq!(count, 4);
        assert_eq!(one, Some(held_key("a", 0)), "every column comes back");
        assert!(none.is_none());
    }
}

on_every_backend! {
    async fn a_held_keys_usage_is_saved_and_summed_per_window_and_it_deletes(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let k = |n: &str| keyserver_protocol::KeyName::new(n).unwrap();
        let (in_window, later, gone, again, row) = write(&s, move |tx| {
            Box::pin(async move {
                for n in ["one", "two", "three"] {
                    tx.insert_held_key(a, &held_key(n, 2)).await?;
                }
                let usage = |signatures, window_start, window_count| KeyUsage {
                    signatures,
                    window_start,
                    window_count,
                };
                tx.save_key_usage(a, &k("one"), &usage(10, 600, 3)).await?;
                tx.save_key_usage(a, &k("two"), &usage(4, 600, 4)).await?;
                // An older window does not count in the current one.
                tx.save_key_usage(a, &k("three"), &usage(50, 540, 9)).await?;
                let in_window = tx.signatures_in_window(a, 600).await?;
                let later = tx.signatures_in_window(a, 660).await?;
                let gone = tx.delete_held_key(a, &k("two")).await?;
                let again = tx.delete_held_key(a, &k("two")).await?;
                Ok((in_window, later, gone, again, tx.held_key(a, &k("one")).await?))
            })
        })
        .await;
        assert_eq!((in_window, later), (7, 0));
        assert_eq!((gone, again), (true, false));
        assert_eq!(
            row.unwrap().usage,
            KeyUsage {
                signatures: 10,
                window_start: 600,
                window_count: 3
            }
        );
    }
}

on_every_backend! {
    async fn an_event_about_a_held_key_keeps_its_name_and_digest(s: Storage) {
        let a = new_account(&s, "alice").await.id;
        let key = keyserver_protocol::KeyName::new("eth-hot").unwrap();
        let e = AuditEvent {
            seq: 1,
            time: 5,
            body: EventBody::about_key(EventKind::KeySign, &key, Outcome::Ok)
                .with_digest([0x5a; 32]),
            hash: [1; 32],
        };
        let stored = e.clone();
        write(&s, move |tx| Box::pin(async move { tx.insert_event(a, &stored).await })).await;
        let back = s
            .read(move |tx| Box::pin(async move { tx.events(a, 0, 10).await }))
            .await
            .unwrap();
        assert_eq!(back, [e]);
    }
}
