//! Keys the server holds: every operation through the client library, the audit events they
//! write, the rate limits, the reauth that export and delete need, and a database that was
//! altered.

use std::time::Duration;

use keyserver::config::Config;
use keyserver_protocol::{
    ErrorCode, KeyName, OpRequest, OpResponse,
    audit_chain::{EventKind, Outcome},
    codec::Bytes,
    ops::{KeyDelete, KeyExport, KeyGenerate, KeyPublic, KeySign},
    signing::{Algorithm, MessageHash, PrivateKey, SignOptions, message_digest, verify},
};
use local_client::ClientError;
use rand::rngs::OsRng;

use crate::{harness::*, on_every_backend};

fn key(s: &str) -> KeyName {
    KeyName::new(s).unwrap()
}

on_every_backend! {
    async fn every_key_operation_works_and_each_is_in_the_verified_audit_log(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();

        let hot = a.generate_key(&key("eth-hot"), Algorithm::Secp256k1, false).await.unwrap();
        assert_eq!(hot.public_key.len(), 33);
        let deploy = a.generate_key(&key("deploy"), Algorithm::Ed25519, true).await.unwrap();
        assert_eq!(deploy.public_key.len(), 32);
        let legacy_key = PrivateKey::generate(Algorithm::Ed25519, &mut OsRng);
        let legacy = a.import_key(&key("legacy"), &legacy_key, false).await.unwrap();
        assert_eq!(legacy.public_key.as_slice(), legacy_key.public_key().unwrap().as_slice());

        // Names are a namespace of their own: taken once, beside secrets of the same name.
        assert!(matches!(
            a.generate_key(&key("eth-hot"), Algorithm::Ed25519, false).await,
            Err(ClientError::NameExists)
        ));
        a.store(&secret("eth-hot"), &pw("a secret"), false).await.unwrap();

        let tx = b"to: bob, 5 ETH";
        for hash in [None, Some(MessageHash::Keccak256)] {
            let options = SignOptions { hash, recoverable: true };
            let signed = a.sign(&key("eth-hot"), tx, options).await.unwrap();
            assert_eq!(signed.signature.len(), 65);
            verify(Algorithm::Secp256k1, hot.public_key.as_slice(), tx, options, signed.signature.as_slice()).unwrap();
        }
        let signed = a.sign(&key("legacy"), tx, SignOptions::default()).await.unwrap();
        // Ed25519 is deterministic: the same signature as the key makes here.
        assert_eq!(signed.signature.as_slice(), legacy_key.sign(tx, SignOptions::default()).unwrap());
        assert!(matches!(
            a.sign(&key("legacy"), tx, SignOptions { hash: Some(MessageHash::Sha256), recoverable: false }).await,
            Err(ClientError::InvalidInput(_))
        ));
        assert!(matches!(
            a.sign(&key("missing"), tx, SignOptions::default()).await,
            Err(ClientError::NotFound)
        ));

        let listed = a.list_keys().await.unwrap();
        let names: Vec<_> = listed.iter().map(|k| (k.name.as_str(), k.signatures)).collect();
        assert_eq!(names, [("deploy", 0), ("eth-hot", 2), ("legacy", 1)]);
        assert_eq!(a.key(&key("eth-hot")).await.unwrap().public_key, hot.public_key);

        let exported = a.export_key(&key("deploy"), &pw("pw")).await.unwrap();
        assert_eq!(exported.public_key().unwrap().as_slice(), deploy.public_key.as_slice());
        assert!(matches!(
            a.export_key(&key("legacy"), &pw("pw")).await,
            Err(ClientError::Server(ErrorCode::NOT_EXPORTABLE))
        ));
        a.delete_key(&key("legacy"), &pw("pw")).await.unwrap();
        assert!(matches!(a.key(&key("legacy")).await, Err(ClientError::NotFound)));
        assert!(matches!(
            a.delete_key(&key("legacy"), &pw("pw")).await,
            Err(ClientError::NotFound)
        ));

        let report = a.audit().await.unwrap();
        report.verification.unwrap();
        let keys: Vec<_> = report
            .events
            .iter()
            .filter(|e| e.body.kind.is_about_a_key())
            .map(|e| (e.body.kind, e.body.key.as_ref().unwrap().as_str().to_string(), e.body.outcome, e.body.digest))
            .collect();
        use EventKind as K;
        use Outcome as O;
        let d = Some(message_digest(tx));
        let pk = |k: &keyserver_protocol::ops::KeyInfo| Some(message_digest(k.public_key.as_slice()));
        assert_eq!(
            keys,
            [
                (K::KeyGenerate, "eth-hot".into(), O::Ok, pk(&hot)),
                (K::KeyGenerate, "deploy".into(), O::Ok, pk(&deploy)),
                (K::KeyImport, "legacy".into(), O::Ok, pk(&legacy)),
                (K::KeyGenerate, "eth-hot".into(), O::Refused, None),
                (K::KeySign, "eth-hot".into(), O::Ok, d),
                (K::KeySign, "eth-hot".into(), O::Ok, d),
                (K::KeySign, "legacy".into(), O::Ok, d),
                // The ed25519 key refused a hash before anything was signed: no event.
                (K::KeySign, "missing".into(), O::NotFound, d),
                (K::KeyExport, "deploy".into(), O::Ok, None),
                (K::KeyExport, "legacy".into(), O::Refused, None),
                (K::KeyDelete, "legacy".into(), O::Ok, None),
                (K::KeyDelete, "legacy".into(), O::NotFound, None),
            ]
        );
        // Nothing holds an exported or imported private key in clear.
        for secret in [exported.expose_secret(), legacy_key.expose_secret()] {
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let n = s
                .count(&format!(
                    "SELECT COUNT(*) FROM session_responses WHERE {}",
                    if kind == Kind::Sqlite {
                        format!("instr(hex(response), upper('{hex}')) > 0")
                    } else {
                        format!("position('\\x{hex}'::bytea in response) > 0")
                    }
                ))
                .await;
            assert_eq!(n, 0, "a recorded answer holds a private key");
        }
    }
}

on_every_backend! {
    async fn signatures_are_limited_per_key_and_per_account_per_minute(kind: Kind) {
        let config = Config {
            signatures_per_minute_per_key: 2,
            signatures_per_minute_per_account: 3,
            ..Config::default()
        };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        for n in ["one", "two"] {
            a.generate_key(&key(n), Algorithm::Ed25519, false).await.unwrap();
        }
        let sign = |n: &'static str| {
            let a = &a;
            async move { a.sign(&key(n), b"m", SignOptions::default()).await }
        };
        sign("one").await.unwrap();
        sign("one").await.unwrap();
        assert!(matches!(sign("one").await, Err(ClientError::Server(ErrorCode::SLOW_DOWN))));
        sign("two").await.unwrap();
        // The account's three are spent: the other key waits too.
        assert!(matches!(sign("two").await, Err(ClientError::Server(ErrorCode::SLOW_DOWN))));
        // By hand: the refusal says how long to wait.
        let raw = s.raw().login("alice", "pw").await.unwrap();
        let op = OpRequest::KeySign(KeySign {
            name: key("two"),
            message: Bytes::new(b"m".to_vec()).unwrap(),
            options: SignOptions::default(),
        });
        match raw.op(&op).await.unwrap() {
            OpResponse::Error(e) => {
                assert_eq!(e.code, ErrorCode::SLOW_DOWN);
                assert!(e.retry_after_secs.is_some_and(|w| (1..=60).contains(&w)), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        s.advance(Duration::from_secs(60));
        sign("one").await.unwrap();
        let counts: Vec<_> = a.list_keys().await.unwrap().iter().map(|k| k.signatures).collect();
        assert_eq!(counts, [3, 1]);
    }
}

on_every_backend! {
    async fn export_and_delete_need_a_fresh_reauth_and_a_retried_sign_counts_once(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        let raw = s.raw().login("alice", "pw").await.unwrap();
        let generate = OpRequest::KeyGenerate(KeyGenerate {
            name: key("k"),
            algorithm: Algorithm::Secp256k1,
            exportable: true,
        });
        assert!(matches!(raw.op(&generate).await.unwrap(), OpResponse::Key(_)));
        let refused = |r: OpResponse| match r {
            OpResponse::Error(e) => e.code,
            other => panic!("{other:?}"),
        };
        let export = OpRequest::KeyExport(KeyExport { name: key("k") });
        let delete = OpRequest::KeyDelete(KeyDelete { name: key("k") });
        assert_eq!(refused(raw.op(&export).await.unwrap()), ErrorCode::REAUTH_REQUIRED);
        assert_eq!(refused(raw.op(&delete).await.unwrap()), ErrorCode::REAUTH_REQUIRED);

        // The same sealed request twice: the recorded answer, one signature counted.
        let sign = raw.seal(&OpRequest::KeySign(KeySign {
            name: key("k"),
            message: Bytes::new(vec![7; 32]).unwrap(),
            options: SignOptions { hash: Some(MessageHash::Prehashed), recoverable: false },
        }));
        let first = raw.send(&sign).await.unwrap();
        let again = raw.send(&sign).await.unwrap();
        assert_eq!(first, again);
        let OpResponse::Key(k) = raw.op(&OpRequest::KeyPublic(KeyPublic { name: key("k") })).await.unwrap() else {
            panic!()
        };
        assert_eq!(k.signatures, 1);

        raw.reauth().await.unwrap();
        assert!(matches!(raw.op(&export).await.unwrap(), OpResponse::ExportedKey(_)));
        // The reauth's window passes.
        s.advance(Duration::from_secs(s.config.reauth_window_secs + 1));
        assert_eq!(refused(raw.op(&delete).await.unwrap()), ErrorCode::REAUTH_REQUIRED);
        raw.reauth().await.unwrap();
        assert_eq!(raw.op(&delete).await.unwrap(), OpResponse::KeyDeleted);
    }
}

on_every_backend! {
    /// An operator who swaps a key's public key in the database (so that users pay to an
    /// address of theirs), or moves a key to another account, gets no answer out of it: the
    /// sealed private key no longer opens for the row.
    async fn a_key_row_altered_in_the_database_is_refused(kind: Kind) {
        let Some(s) = Server::new(kind, Config::default()).await else { return };
        s.register("alice", "pw").await;
        s.register("mallory", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        let m = s.login("mallory", "pw").await.unwrap();
        a.generate_key(&key("hot"), Algorithm::Secp256k1, false).await.unwrap();
        let theirs = m.generate_key(&key("bait"), Algorithm::Secp256k1, false).await.unwrap();
        let hex: String = theirs.public_key.as_slice().iter().map(|b| format!("{b:02x}")).collect();
        s.sql(
            &format!("UPDATE held_keys SET public_key = X'{hex}' WHERE name = 'hot'"),
            &format!("UPDATE held_keys SET public_key = '\\x{hex}'::bytea WHERE name = 'hot'"),
        )
        .await;
        assert!(matches!(a.key(&key("hot")).await, Err(ClientError::Server(ErrorCode::INTERNAL))));
        assert!(matches!(a.list_keys().await, Err(ClientError::Server(ErrorCode::INTERNAL))));
        assert!(matches!(
            a.sign(&key("hot"), b"m", SignOptions::default()).await,
            Err(ClientError::Server(ErrorCode::INTERNAL))
        ));
        // Mallory's key handed to alice's account does not sign for her either.
        s.sql(
            "UPDATE held_keys SET account_id = (SELECT id FROM accounts WHERE user_name = 'alice'), name = 'moved' WHERE name = 'bait'",
            "UPDATE held_keys SET account_id = (SELECT id FROM accounts WHERE user_name = 'alice'), name = 'moved' WHERE name = 'bait'",
        )
        .await;
        assert!(matches!(
            a.sign(&key("moved"), b"m", SignOptions::default()).await,
            Err(ClientError::Server(ErrorCode::INTERNAL))
        ));
        // A key made not exportable, flipped to exportable in the database: no export.
        a.generate_key(&key("cold"), Algorithm::Ed25519, false).await.unwrap();
        s.sql(
            "UPDATE held_keys SET exportable = 1 WHERE name = 'cold'",
            "UPDATE held_keys SET exportable = TRUE WHERE name = 'cold'",
        )
        .await;
        assert!(matches!(
            a.export_key(&key("cold"), &pw("pw")).await,
            Err(ClientError::Server(ErrorCode::INTERNAL))
        ));
    }
}

on_every_backend! {
    /// Many signatures in flight at once, from sessions on two instances: exactly the limit
    /// gets through, each counted once, whatever order they commit in.
    async fn concurrent_signatures_never_pass_the_limit(kind: Kind) {
        let config = Config {
            signatures_per_minute_per_key: 5,
            signatures_per_minute_per_account: 1000,
            ..Config::default()
        };
        let Some(s) = Server::new(kind, config).await else { return };
        s.register("alice", "pw").await;
        let a = s.login("alice", "pw").await.unwrap();
        a.generate_key(&key("k"), Algorithm::Ed25519, false).await.unwrap();
        let other = s.separate_instance().await;
        let conn = connect(&other, LOCALHOST).await;
        let b = conn.login(&name_of("alice"), &pw("pw")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..24u8 {
            let session = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                session.sign(&key("k"), &[i], SignOptions::default()).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(ClientError::Server(ErrorCode::SLOW_DOWN)) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok, 5);
        assert_eq!(a.key(&key("k")).await.unwrap().signatures, 5);
    }
}
