//! Sealed requests sent again, replayed, forged or out of their session.

use std::time::Duration;

use keyserver::config::Config;
use keyserver_protocol::{
    ErrorCode, OpRequest, OpResponse, codec::Bytes, limits::REPLAY_WINDOW, session::SessionId,
};

use crate::{harness::*, on_every_backend};

on_every_backend! {
    /// A mutation sent again (a client that lost its connection) is applied once and gets
    /// the first answer; refusals are recorded too.
    async fn a_repeated_mutation_is_applied_once_and_gets_the_first_answer(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.raw().login("alice", "pw").await.unwrap();
        let store = a.seal(&a.store_op("wallet", 1, b"c1", false));
        let first = a.send(&store).await.unwrap();
        assert!(matches!(first, OpResponse::Stored(ref x) if x.version == 1), "{first:?}");
        s.advance(Duration::from_secs(5));
        assert_eq!(a.send(&store).await.unwrap(), first, "the same answer, even later");
        // On another instance too (a fleet member, or this one restarted).
        let other = Raw::new(&s.instance(), LOCALHOST);
        let moved = RawSession { raw: other, ..a };
        assert_eq!(moved.send(&store).await.unwrap(), first);
        let a = moved;
        let del = a.seal(&a.delete_op("wallet"));
        assert_eq!(a.send(&del).await.unwrap(), OpResponse::Deleted);
        assert_eq!(a.send(&del).await.unwrap(), OpResponse::Deleted);
        // A refusal is recorded as such: the name exists now, and stays refused on a resend.
        let v2 = a.seal(&a.store_op("wallet", 2, b"c2", false));
        assert!(matches!(a.send(&v2).await.unwrap(), OpResponse::Stored(_)));
        let refused = a.seal(&a.store_op("wallet", 3, b"c3", false));
        let r1 = a.send(&refused).await.unwrap();
        assert!(matches!(&r1, OpResponse::Error(e) if e.code == ErrorCode::NAME_EXISTS), "{r1:?}");
        assert_eq!(a.send(&refused).await.unwrap(), r1);
        // register, login started + succeeded, store, delete, store, refused store, login
        // started + succeeded, the audit's list
        let session = s.login("alice", "pw").await.unwrap();
        let report = session.audit().await.unwrap();
        report.verification.unwrap();
        assert_eq!(report.events.len(), 10);
    }
}

on_every_backend! {
    async fn misused_sealed_requests_get_distinct_refusals(kind: Kind) {
        let config = Config { session_idle_timeout_secs: 2, ..Config::default() };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let raw = s.raw();
        let a = raw.login("alice", "pw").await.unwrap();
        let list = list_op();

        // Replayed: the same read twice.
        let r1 = a.seal(&list);
        assert!(a.send(&r1).await.is_ok());
        assert_eq!(a.send(&r1).await, Err(ErrorCode::REPLAYED));
        // Reordered beyond the window: sealed now, sent after 1,100 newer ones.
        let old = a.seal(&list);
        let mut newest = None;
        for _ in 0..REPLAY_WINDOW + 76 {
            newest = Some(a.seal(&list));
        }
        assert!(a.send(&newest.unwrap()).await.is_ok());
        assert_eq!(a.send(&old).await, Err(ErrorCode::REPLAYED));
        // A wrong session id.
        let mut wrong = a.seal(&list);
        wrong.session_id = SessionId([0xEE; 16]);
        assert_eq!(a.send(&wrong).await, Err(ErrorCode::UNKNOWN_SESSION));
        // Altered ciphertext.
        let mut bad = a.seal(&list);
        let mut body = bad.body.into_vec();
        body[3] ^= 0x40;
        bad.body = Bytes::new(body).unwrap();
        assert_eq!(a.send(&bad).await, Err(ErrorCode::BAD_SEAL));
        // A body that opens but is no operation.
        let junk = a.channel.seal_request(&[0xff, 0xff]).unwrap();
        assert!(matches!(a.send(&junk).await, Ok(OpResponse::Error(e)) if e.code == ErrorCode::MALFORMED));

        // After expiry (idle timeout 2 s).
        let idle = raw.login("alice", "pw").await.unwrap();
        s.advance(Duration::from_millis(2300));
        assert_eq!(idle.op(&list).await, Err(ErrorCode::SESSION_EXPIRED));

        // After logout.
        let b = raw.login("alice", "pw").await.unwrap();
        assert_eq!(b.op(&OpRequest::Logout).await, Ok(OpResponse::LoggedOut));
        assert_eq!(b.op(&list).await, Err(ErrorCode::UNKNOWN_SESSION));
    }
}

on_every_backend! {
    /// A read sent again is refused, not run again, and a retrieve by hand gets exactly
    /// what the library would open.
    async fn a_repeated_read_is_refused(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        s.login("alice", "pw").await.unwrap().store(&secret("w"), &pw("x"), false).await.unwrap();
        let a = s.raw().login("alice", "pw").await.unwrap();
        let get = a.seal(&a.retrieve_op("w"));
        let Ok(OpResponse::Secret(got)) = a.send(&get).await else { panic!() };
        let opened = a.storage_key.open_secret(&a.user, &secret("w"), got.version, got.sealed.as_slice()).unwrap();
        assert_eq!(opened.expose_secret(), b"x");
        assert_eq!(a.send(&get).await, Err(ErrorCode::REPLAYED));
    }
}
