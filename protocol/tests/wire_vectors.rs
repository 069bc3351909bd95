#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
//! Golden wire vectors: the exact bytes of every request and response variant, built from
//! fixed inputs, checked against `spec/vectors/messages.json`.
//!
//! postcard numbers enum variants in declaration order and writes struct fields in order,
//! with no names: reordering a variant or a field changes the bytes every deployed client
//! sends, and nothing else would notice. Any such change fails here, and must come with a
//! new vector file and a change to `spec/protocol.md`.
//!
//! To write the file after a deliberate change to the wire:
//! `KEYSERVER_WRITE_VECTORS=1 cargo test -p keyserver-protocol --test wire_vectors`.

use std::collections::BTreeMap;

use keyserver_protocol::{
    ErrorCode, ErrorReply, HandshakeId, KeyName, NameTag, OpRequest, OpResponse, Request, Response,
    SealedRequest, SealedResponse, UserName,
    audit_chain::{AuditEvent, EventBody, EventKind, Outcome},
    codec::Bytes,
    ops::{self, SecretEntry},
    session::SessionId,
    signing::{Algorithm, MessageHash, SignOptions},
};

fn bytes<const N: usize>(fill: u8, len: usize) -> Bytes<N> {
    Bytes::new(vec![fill; len]).unwrap()
}

fn user() -> UserName {
    UserName::new("alice").unwrap()
}

fn tag(b: u8) -> NameTag {
    NameTag([b; 32])
}

fn requests() -> Vec<(&'static str, Request)> {
    vec![
        (
            "RegisterStart",
            Request::RegisterStart {
                user: user(),
                message: bytes(1, 32),
            },
        ),
        (
            "RegisterFinish",
            Request::RegisterFinish {
                handshake: HandshakeId([2; 16]),
                upload: bytes(3, 192),
                sealed_storage_key: bytes(4, 73),
            },
        ),
        (
            "LoginStart",
            Request::LoginStart {
                user: user(),
                message: bytes(5, 96),
            },
        ),
        (
            "LoginFinish",
            Request::LoginFinish {
                handshake: HandshakeId([6; 16]),
                message: bytes(7, 64),
            },
        ),
        (
            "LoginAbort",
            Request::LoginAbort {
                handshake: HandshakeId([8; 16]),
            },
        ),
        (
            "Sealed",
            Request::Sealed(SealedRequest {
                session_id: SessionId([9; 16]),
                seq: 300,
                body: bytes(10, 40),
            }),
        ),
        ("Attest", Request::Attest { nonce: [11; 32] }),
    ]
}

fn responses() -> Vec<(&'static str, Response)> {
    vec![
        (
            "RegisterStarted",
            Response::RegisterStarted {
                handshake: HandshakeId([1; 16]),
                message: bytes(2, 64),
            },
        ),
        ("Registered", Response::Registered),
        (
            "LoginStarted",
            Response::LoginStarted {
                handshake: HandshakeId([3; 16]),
                message: bytes(4, 320),
            },
        ),
        (
            "LoggedIn",
            Response::LoggedIn {
                sealed_storage_key: bytes(5, 73),
                epoch: 2,
                idle_timeout_secs: 900,
                lifetime_secs: 43200,
            },
        ),
        (
            "LoginAborted",
            Response::LoginAborted {
                guesses_left: Some(9),
            },
        ),
        (
            "Sealed",
            Response::Sealed(SealedResponse {
                seq: 300,
                body: bytes(6, 40),
            }),
        ),
        (
            "Error",
            Response::Error(ErrorReply {
                code: ErrorCode::ACCOUNT_LOCKED,
                retry_after_secs: Some(120),
                expected_version: None,
                guesses_left: None,
            }),
        ),
        (
            "Attestation",
            Response::Attestation {
                document: bytes(0xd2, 20),
            },
        ),
    ]
}

fn op_requests() -> Vec<(&'static str, OpRequest)> {
    vec![
        (
            "Store",
            OpRequest::Store(ops::Store {
                tag: tag(0x11),
                sealed_name: bytes(0x12, 47),
                version: 2,
                replace: true,
                sealed: bytes(1, 60),
            }),
        ),
        (
            "Retrieve",
            OpRequest::Retrieve(ops::Retrieve { tag: tag(0x11) }),
        ),
        (
            "List",
            OpRequest::List(ops::List {
                after: Some(tag(0x13)),
                deleted: true,
            }),
        ),
        ("Delete", OpRequest::Delete(ops::Delete { tag: tag(0x11) })),
        ("Audit", OpRequest::Audit(ops::Audit { after: 129 })),
        (
            "ChangePasswordStart",
            OpRequest::ChangePasswordStart(ops::ChangePasswordStart {
                message: bytes(2, 32),
            }),
        ),
        (
            "ChangePasswordFinish",
            OpRequest::ChangePasswordFinish(ops::ChangePasswordFinish {
                epoch: 3,
                upload: bytes(3, 192),
                sealed_storage_key: bytes(4, 73),
            }),
        ),
        ("Logout", OpRequest::Logout),
        (
            "ReauthStart",
            OpRequest::ReauthStart(ops::ReauthStart {
                message: bytes(5, 96),
            }),
        ),
        (
            "ReauthFinish",
            OpRequest::ReauthFinish(ops::ReauthFinish {
                handshake: HandshakeId([6; 16]),
                message: bytes(7, 64),
            }),
        ),
        (
            "RotateKeyStage",
            OpRequest::RotateKeyStage(ops::RotateKeyStage {
                secrets: vec![ops::StagedSecret {
                    tag: tag(0x11),
                    new_tag: tag(0x14),
                    sealed_name: bytes(0x15, 47),
                    version: 2,
                    sealed: Some(bytes(8, 60)),
                }],
            }),
        ),
        (
            "RotateKeyFinish",
            OpRequest::RotateKeyFinish(ops::RotateKeyFinish {
                epoch: 4,
                sealed_storage_key: bytes(9, 73),
                secrets: 1,
            }),
        ),
        (
            "ReauthAbort",
            OpRequest::ReauthAbort(ops::ReauthAbort {
                handshake: HandshakeId([6; 16]),
            }),
        ),
        (
            "SaveCheckpoint",
            OpRequest::SaveCheckpoint(ops::SaveCheckpoint {
                checkpoint: checkpoint(),
            }),
        ),
        ("Checkpoints", OpRequest::Checkpoints),
        (
            "KeyGenerate",
            OpRequest::KeyGenerate(ops::KeyGenerate {
                name: key_name(),
                algorithm: Algorithm::Secp256k1,
                exportable: true,
            }),
        ),
        (
            "KeyImport",
            OpRequest::KeyImport(ops::KeyImport {
                name: key_name(),
                algorithm: Algorithm::Ed25519,
                private_key: ops::KeyMaterial::new([0x42; 32]),
                exportable: false,
            }),
        ),
        (
            "KeySign",
            OpRequest::KeySign(ops::KeySign {
                name: key_name(),
                message: bytes(0x13, 40),
                options: SignOptions {
                    hash: Some(MessageHash::Keccak256),
                    recoverable: true,
                },
            }),
        ),
        (
            "KeyPublic",
            OpRequest::KeyPublic(ops::KeyPublic { name: key_name() }),
        ),
        (
            "KeyList",
            OpRequest::KeyList(ops::KeyList {
                after: Some(key_name()),
            }),
        ),
        (
            "KeyExport",
            OpRequest::KeyExport(ops::KeyExport { name: key_name() }),
        ),
        (
            "KeyDelete",
            OpRequest::KeyDelete(ops::KeyDelete { name: key_name() }),
        ),
    ]
}

fn key_name() -> KeyName {
    KeyName::new("eth-hot").unwrap()
}

fn key_info() -> ops::KeyInfo {
    ops::KeyInfo {
        name: key_name(),
        algorithm: Algorithm::Secp256k1,
        public_key: bytes(0x02, 33),
        exportable: false,
        created: 1_700_000_000,
        signatures: 9,
    }
}

fn op_responses() -> Vec<(&'static str, OpResponse)> {
    let event = AuditEvent {
        seq: 7,
        time: 1_700_000_000,
        body: EventBody::about(EventKind::Store, &tag(0x11), Outcome::Ok).at_version(2),
        hash: [0xab; 32],
    };
    let key_event = AuditEvent {
        seq: 8,
        time: 1_700_000_001,
        body: EventBody::about_key(EventKind::KeySign, &key_name(), Outcome::Ok)
            .with_digest([0x5a; 32]),
        hash: [0xac; 32],
    };
    vec![
        (
            "Stored",
            OpResponse::Stored(ops::Stored {
                version: 2,
                created: 1_700_000_000,
            }),
        ),
        (
            "Secret",
            OpResponse::Secret(ops::Secret {
                version: 2,
                created: 1_700_000_000,
                sealed: bytes(1, 60),
            }),
        ),
        (
            "List",
            OpResponse::List(ops::ListPage {
                entries: vec![SecretEntry {
                    tag: tag(0x11),
                    sealed_name: bytes(0x12, 47),
                    version: 2,
                    size: 19,
                    created: 1_700_000_000,
                    deleted: false,
                }],
                more: false,
            }),
        ),
        ("Deleted", OpResponse::Deleted),
        (
            "Audit",
            OpResponse::Audit(ops::AuditPage {
                events: vec![event, key_event],
                more: true,
            }),
        ),
        (
            "ChangePasswordStarted",
            OpResponse::ChangePasswordStarted(ops::ChangePasswordStarted {
                message: bytes(2, 64),
            }),
        ),
        (
            "PasswordChanged",
            OpResponse::PasswordChanged(ops::Rekeyed { epoch: 3 }),
        ),
        ("LoggedOut", OpResponse::LoggedOut),
        (
            "Error",
            OpResponse::Error(ErrorReply {
                code: ErrorCode::VERSION_MISMATCH,
                retry_after_secs: None,
                expected_version: Some(3),
                guesses_left: None,
            }),
        ),
        (
            "ReauthStarted",
            OpResponse::ReauthStarted(ops::ReauthStarted {
                handshake: HandshakeId([3; 16]),
                message: bytes(4, 320),
            }),
        ),
        (
            "Reauthenticated",
            OpResponse::Reauthenticated(ops::Reauthenticated { valid_secs: 300 }),
        ),
        ("Staged", OpResponse::Staged(ops::Staged { staged: 1 })),
        (
            "KeyRotated",
            OpResponse::KeyRotated(ops::Rekeyed { epoch: 4 }),
        ),
        (
            "ReauthAborted",
            OpResponse::ReauthAborted(ops::ReauthAborted {
                guesses_left: Some(2),
            }),
        ),
        ("CheckpointSaved", OpResponse::CheckpointSaved),
        (
            "Checkpoints",
            OpResponse::Checkpoints(ops::CheckpointList {
                checkpoints: vec![ops::StoredCheckpoint {
                    checkpoint: checkpoint(),
                    time: 1_700_000_000,
                }],
            }),
        ),
        ("Key", OpResponse::Key(key_info())),
        (
            "Signature",
            OpResponse::Signature(ops::KeySignature {
                signature: bytes(0x33, 65),
                key: key_info(),
            }),
        ),
        (
            "Keys",
            OpResponse::Keys(ops::KeyListPage {
                keys: vec![key_info()],
                more: false,
            }),
        ),
        (
            "ExportedKey",
            OpResponse::ExportedKey(ops::ExportedKey {
                algorithm: Algorithm::Ed25519,
                public_key: bytes(0x03, 32),
                private_key: ops::KeyMaterial::new([0x44; 32]),
            }),
        ),
        ("KeyDeleted", OpResponse::KeyDeleted),
    ]
}

type Table = BTreeMap<String, BTreeMap<String, String>>;

fn table() -> Table {
    let mut t = Table::new();
    let mut put = |kind: &str, entries: Vec<(&str, Vec<u8>)>| {
        t.insert(
            kind.to_string(),
            entries
                .into_iter()
                .map(|(n, b)| (n.to_string(), hex::encode(b)))
                .collect(),
        );
    };
    put(
        "request",
        requests()
            .into_iter()
            .map(|(n, m)| (n, m.encode()))
            .collect(),
    );
    put(
        "response",
        responses()
            .into_iter()
            .map(|(n, m)| (n, m.encode()))
            .collect(),
    );
    put(
        "op_request",
        op_requests()
            .into_iter()
            .map(|(n, m)| (n, m.encode()))
            .collect(),
    );
    put(
        "op_response",
        op_responses()
            .into_iter()
            .map(|(n, m)| (n, m.encode()))
            .collect(),
    );
    put(
        "op_answer",
        op_answers()
            .into_iter()
            .map(|(n, m)| (n, m.encode()))
            .collect(),
    );
    t
}

fn checkpoint() -> keyserver_protocol::checkpoint::Checkpoint {
    keyserver_protocol::checkpoint::Checkpoint {
        position: keyserver_protocol::audit_chain::AuditPosition {
            seq: 40,
            head: [0x5a; 32],
        },
        mac: [0x6b; 32],
    }
}

/// What a sealed response carries: an answer with the account's audit position, and one
/// without (an operation that did not read it).
fn op_answers() -> Vec<(&'static str, ops::OpAnswer)> {
    vec![
        (
            "WithPosition",
            ops::OpAnswer {
                position: Some(keyserver_protocol::audit_chain::AuditPosition {
                    seq: 12,
                    head: [0xcd; 32],
                }),
                response: OpResponse::Deleted,
            },
        ),
        (
            "WithoutPosition",
            ops::OpAnswer {
                position: None,
                response: OpResponse::LoggedOut,
            },
        ),
    ]
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/vectors/messages.json");

#[test]
fn every_message_variant_has_exactly_the_bytes_of_the_spec() {
    let ours = table();
    if std::env::var_os("KEYSERVER_WRITE_VECTORS").is_some() {
        let doc = serde_json::json!({
            "description": "Exact encoding (postcard, hex) of one instance of every request and response variant, built from the fixed inputs in protocol/tests/wire_vectors.rs. A change here is a change of the wire protocol.",
            "messages": ours,
        });
        std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(PATH).expect("spec/vectors/messages.json"))
            .unwrap();
    let theirs: Table = serde_json::from_value(doc["messages"].clone()).unwrap();
    for (kind, entries) in &ours {
        let spec = theirs
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} in the vectors"));
        for (variant, hex) in entries {
            assert_eq!(
                Some(hex),
                spec.get(variant),
                "{kind} {variant}: the encoding differs from spec/vectors/messages.json"
            );
        }
        assert_eq!(
            entries.len(),
            spec.len(),
            "{kind}: the vectors name variants the code does not have"
        );
    }
    assert_eq!(ours.len(), theirs.len());
}

#[test]
fn every_vector_decodes_to_the_message_it_was_made_from() {
    for (n, m) in requests() {
        assert_eq!(Request::decode(&m.encode()).unwrap(), m, "{n}");
    }
    for (n, m) in responses() {
        assert_eq!(Response::decode(&m.encode()).unwrap(), m, "{n}");
    }
    for (n, m) in op_requests() {
        assert_eq!(OpRequest::decode(&m.encode()).unwrap(), m, "{n}");
    }
    for (n, m) in op_responses() {
        assert_eq!(OpResponse::decode(&m.encode()).unwrap(), m, "{n}");
    }
    for (n, m) in op_answers() {
        assert_eq!(ops::OpAnswer::decode(&m.encode()).unwrap(), m, "{n}");
    }
}

/// Every variant of every enum is in the samples: a new variant without a vector fails.
#[test]
fn the_samples_cover_every_variant() {
    fn tags<T: serde::Serialize>(ms: &[(&str, T)]) -> Vec<u8> {
        ms.iter()
            .map(|(_, m)| keyserver_protocol::codec::encode(m)[0])
            .collect()
    }
    for (kind, t) in [
        ("request", tags(&requests())),
        ("response", tags(&responses())),
        ("op_request", tags(&op_requests())),
        ("op_response", tags(&op_responses())),
    ] {
        let expected: Vec<u8> = (0..u8::try_from(t.len()).unwrap()).collect();
        assert_eq!(
            t, expected,
            "{kind}: samples are not one per variant, in order"
        );
    }
    // The tag after the last sample is no variant at all: alone, a known variant's tag
    // either decodes (no fields) or runs out of input, an unknown one is refused by the
    // variant visitor. So there is no variant the samples miss.
    fn unknown_tag<T: serde::de::DeserializeOwned>(n: usize) -> bool {
        matches!(
            postcard::from_bytes::<T>(&[u8::try_from(n).unwrap()]),
            Err(postcard::Error::SerdeDeCustom)
        )
    }
    for n in 0..requests().len() {
        assert!(!unknown_tag::<Request>(n), "request {n}");
    }
    assert!(unknown_tag::<Request>(requests().len()), "request");
    assert!(unknown_tag::<Response>(responses().len()), "response");
    assert!(unknown_tag::<OpRequest>(op_requests().len()), "op_request");
    assert!(
        unknown_tag::<OpResponse>(op_responses().len()),
        "op_response"
    );
}
