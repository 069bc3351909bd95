//! Sessions: their expiry, their life beyond one instance, and the per-account cap.

use std::time::Duration;

use keyserver::config::Config;
use keyserver_protocol::{ErrorCode, OpRequest, OpResponse};
use local_client::ClientError;

use crate::{harness::*, on_every_backend};

fn short() -> Config {
    Config {
        session_idle_timeout_secs: 60,
        session_lifetime_secs: 300,
        ..Config::default()
    }
}

on_every_backend! {
    async fn a_session_ends_when_idle_and_at_its_lifetime_even_when_busy(kind: Kind) {
        let Some(s) = Server::new(kind, short()).await else { return };
        s.register("alice", "pw").await;
        let idle = s.login("alice", "pw").await.unwrap();
        let busy = s.login("alice", "pw").await.unwrap();
        for _ in 0..4 {
            s.advance(Duration::from_secs(59));
            busy.list().await.unwrap();
        }
        // idle: 236 s without a request.
        assert!(matches!(idle.list().await, Err(ClientError::SessionEnded)));
        s.advance(Duration::from_secs(59));
        // busy: used every 59 s, but 295 s old; at 300 s it ends all the same.
        busy.list().await.unwrap();
        s.advance(Duration::from_secs(5));
        assert!(matches!(busy.list().await, Err(ClientError::SessionEnded)));
        // Expired sessions are swept from memory and, once past, purged from storage.
        s.advance(Duration::from_secs(1));
        s.core.sweep().await;
        assert_eq!(s.core.open_sessions(), 0);
        s.core.purge().await;
        let left = s
            .storage
            .read(|tx| {
                Box::pin(async move {
                    let a = tx.account_by_name(&name_of("alice")).await?.unwrap();
                    tx.count_sessions(a.id).await
                })
            })
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}

on_every_backend! {
    /// A session is carried on by another instance (or this one after a restart) from
    /// the database, and a logout on one ends it on the others within their next check.
    async fn a_session_lives_on_every_instance_and_a_logout_ends_it_everywhere(kind: Kind) {
        let Some(s) = Server::new(kind, short()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        a.store(&secret("w"), &pw("x"), false).await.unwrap();
        let other = s.instance();
        a.move_to(&connect(&other, LOCALHOST).await);
        assert_eq!(a.retrieve(&secret("w")).await.unwrap().0.expose_secret(), b"x");
        // A restarted instance has nothing in memory: it adopts the session as well.
        let restarted = s.instance();
        a.move_to(&connect(&restarted, LOCALHOST).await);
        a.store(&secret("v"), &pw("y"), false).await.unwrap();
        // Logout on the restarted one; the first instance still holds the session in memory
        // and learns of the logout at its next check (every 2 s).
        a.logout().await.unwrap();
        let raw = s.raw().login("alice", "pw").await.unwrap();
        let again = RawSession { raw: Raw::new(&s.core, LOCALHOST), ..raw };
        assert!(again.op(&list_op()).await.is_ok());
        assert_eq!(again.op(&OpRequest::Logout).await, Ok(OpResponse::LoggedOut));
        // A session that expired in the database is not adopted.
        let b = s.login("alice", "pw").await.unwrap();
        s.advance(Duration::from_secs(61));
        b.move_to(&connect(&s.instance(), LOCALHOST).await);
        assert!(matches!(b.list().await, Err(ClientError::SessionEnded)));
        // A session logged out on one instance is refused by another within its check.
        let c = s.login("alice", "pw").await.unwrap();
        c.list().await.unwrap();
        let moved = c.clone();
        moved.move_to(&connect(&other, LOCALHOST).await);
        moved.list().await.unwrap();
        c.move_to(&s.connect().await);
        c.logout().await.unwrap();
        s.advance(Duration::from_secs(3));
        assert!(matches!(moved.list().await, Err(ClientError::SessionEnded)));
    }
}

on_every_backend! {
    async fn an_account_cannot_pile_up_sessions(kind: Kind) {
        let config = Config { max_sessions_per_account: 2, ..Config::default() };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let first = s.login("alice", "pw").await.unwrap();
        let _second = s.login("alice", "pw").await.unwrap();
        let third = s.login("alice", "pw").await;
        assert!(matches!(third, Err(ClientError::Server(ErrorCode::SLOW_DOWN))), "{third:?}");
        // The password was right: the count is reset all the same.
        // Logging one out makes room.
        first.logout().await.unwrap();
        s.login("alice", "pw").await.unwrap();
    }
}

/// Instances of a fleet, each with its own connections to one Postgres, logging one
/// account in at once: the cap on the account's sessions holds between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_logging_one_account_in_never_exceed_its_session_cap() {
    let config = Config {
        max_sessions_per_account: 4,
        max_failed_logins: 1000,
        ..Config::default()
    };
    let Some(s) = Server::new(Kind::Postgres, config).await else {
        return;
    };
    s.register("alice", "pw").await;
    let mut instances = vec![s.core.clone()];
    for _ in 0..2 {
        instances.push(s.separate_instance().await);
    }
    let mut tasks = Vec::new();
    for i in 0..24 {
        let core = instances[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            connect(&core, LOCALHOST)
                .await
                .login(&name_of("alice"), &pw("pw"))
                .await
        }));
    }
    let mut open = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => open += 1,
            Err(ClientError::Server(ErrorCode::SLOW_DOWN)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let stored = s
        .storage
        .read(|tx| {
            Box::pin(async move {
                let a = tx.account_by_name(&name_of("alice")).await?.unwrap();
                tx.count_sessions(a.id).await
            })
        })
        .await
        .unwrap();
    assert_eq!((open, stored), (4, 4));
}
