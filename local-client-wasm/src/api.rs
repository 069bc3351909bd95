//! What JavaScript calls: `Client` (a connection: register, login) and `Session` (a login:
//! the secrets and keys of the account). Every method returns a Promise.

use std::{cell::RefCell, future::Future, rc::Rc, sync::Arc};

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use keyserver_protocol::{
    KeyName, SecretBytes, SecretName, UserName,
    audit_chain::AuditPosition,
    ops::KeyInfo,
    signing::{Algorithm, MessageHash, PrivateKey, SignOptions},
    suite::KsfParams,
};
use local_client::{ClientError, Connection};
use wasm_bindgen::{JsCast, JsValue, prelude::wasm_bindgen};
use zeroize::Zeroize;

use crate::{error::to_js, link::WsConnector, store::Store};

/// Runs `f` as a Promise; a `ClientError` rejects it with a `KeyserverError`.
fn promise<F, T>(f: F) -> Promise
where
    F: Future<Output = Result<T, ClientError>> + 'static,
    T: Into<JsValue>,
{
    wasm_bindgen_futures::future_to_promise(async move { f.await.map(Into::into).map_err(to_js) })
}

fn user(name: &str) -> Result<UserName, ClientError> {
    UserName::new(name).map_err(|e| ClientError::InvalidInput(e.to_string()))
}

fn secret_name(name: &str) -> Result<SecretName, ClientError> {
    SecretName::new(name).map_err(|e| ClientError::InvalidInput(e.to_string()))
}

fn key_name(name: &str) -> Result<KeyName, ClientError> {
    KeyName::new(name).map_err(|e| ClientError::InvalidInput(e.to_string()))
}

/// A password from JavaScript: a string, or a `Uint8Array` (zeroed once copied).
fn password(value: &JsValue) -> Result<SecretBytes, ClientError> {
    if let Some(s) = value.as_string() {
        let mut bytes = s.into_bytes();
        let pw = SecretBytes::new(bytes.clone());
        bytes.zeroize();
        return Ok(pw);
    }
    if let Some(a) = value.dyn_ref::<Uint8Array>() {
        let pw = SecretBytes::new(a.to_vec());
        a.fill(0, 0, a.length());
        return Ok(pw);
    }
    Err(ClientError::InvalidInput(
        "a password is a string or a Uint8Array".into(),
    ))
}

fn algorithm_named(name: &str) -> Result<Algorithm, ClientError> {
    Algorithm::ALL
        .into_iter()
        .find(|a| a.as_str() == name)
        .ok_or_else(|| {
            ClientError::InvalidInput(format!("unknown algorithm {name:?} (ed25519 or secp256k1)"))
        })
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// Unix seconds as a JavaScript number (exact below 2^53).
fn num(n: impl TryInto<i64>) -> JsValue {
    JsValue::from_f64(n.try_into().map_or(f64::NAN, |n: i64| n as f64))
}

fn key_info(info: &KeyInfo) -> Object {
    let o = Object::new();
    set(&o, "name", info.name.as_str());
    set(&o, "algorithm", info.algorithm.as_str());
    set(
        &o,
        "publicKey",
        Uint8Array::from(info.public_key.as_slice()),
    );
    set(&o, "exportable", info.exportable);
    set(&o, "created", num(info.created));
    set(&o, "signatures", num(info.signatures));
    o
}

fn position(p: AuditPosition) -> Object {
    let o = Object::new();
    set(&o, "seq", num(p.seq));
    set(&o, "head", hex::encode(p.head));
    o
}

/// A connection to a keyserver: `Client.connect(url, options)`.
#[wasm_bindgen]
pub struct Client {
    conn: Connection,
    store: Store,
}

#[wasm_bindgen]
impl Client {
    /// Connects to `url` (`wss://HOST:PORT/v1`). `options.store`: an object with
    /// `get(key)` and `put(key, value)` returning Promises, where the client keeps what it
    /// knows of each account (default: IndexedDB, database `options.storeName` or
    /// `keyserver-client`).
    pub async fn connect(url: String, options: Option<Object>) -> Result<Self, JsValue> {
        let get = |k: &str| {
            options
                .as_ref()
                .and_then(|o| Reflect::get(o, &JsValue::from_str(k)).ok())
                .filter(|v| !v.is_undefined() && !v.is_null())
        };
        let store = match get("store") {
            Some(s) => Store::custom(s).map_err(to_js)?,
            None => Store::indexed_db(get("storeName").and_then(|n| n.as_string())),
        };
        let connector = Arc::new(WsConnector::new(&url).map_err(to_js)?);
        // The same key-stretching parameters as the native client: a password registered
        // in the browser logs in from the command line and back.
        let conn = Connection::with_connector(connector, KsfParams::default())
            .await
            .map_err(to_js)?;
        Ok(Self { conn, store })
    }

    /// Registers `user` with `password`. Rejects with `ERROR`/`USER_EXISTS` if taken.
    pub fn register(&self, user_name: String, password_value: JsValue) -> Promise {
        let conn = self.conn.clone();
        let pw = password(&password_value);
        promise(async move {
            let u = user(&user_name)?;
            conn.register(&u, &pw?).await?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Logs `user` in; resolves to a `Session`. What this client knows of the account is
    /// checked against the server's history first (a new browser starts from the newest
    /// checkpoint another device left).
    pub fn login(&self, user_name: String, password_value: JsValue) -> Promise {
        let (conn, store) = (self.conn.clone(), self.store.clone());
        let pw = password(&password_value);
        promise(async move {
            let u = user(&user_name)?;
            let session = conn.login(&u, &pw?).await?;
            let remembered = async {
                let state = store.open(&session.server_id(), &u).await?;
                session.remember(state)?;
                if session.verified_position().is_none() {
                    session.start_from_checkpoint().await?;
                }
                Ok::<_, ClientError>(())
            }
            .await;
            if let Err(e) = remembered {
                let _ = session.logout().await;
                return Err(e);
            }
            Ok(JsValue::from(Session {
                inner: Rc::new(Inner {
                    session: RefCell::new(Some(session)),
                    store,
                }),
            }))
        })
    }

    /// Closes the connection (sessions stay open on the server until they expire or log
    /// out).
    pub fn close(&self) {
        self.conn.close();
    }
}

struct Inner {
    /// `None` once logged out: the session's keys are dropped (and zeroized) as soon as no
    /// request of it is in flight, not when JavaScript's garbage collector gets to it.
    session: RefCell<Option<local_client::Session>>,
    store: Store,
}

impl Inner {
    /// The session, unless logged out.
    fn session(&self) -> Result<local_client::Session, ClientError> {
        self.session
            .borrow()
            .clone()
            .ok_or(ClientError::SessionEnded)
    }

    /// After an operation, whatever its outcome: checks the account's events since the
    /// verified position (a failed answer carries positions too), and stores what this
    /// client now knows unless the server was caught going back (then the stored state
    /// stays as it was), as the command line does after each command.
    async fn finish<T>(
        &self,
        session: &local_client::Session,
        r: Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let checked = session.check_recent_events().await;
        if checked.is_ok() {
            self.save(session).await?;
        }
        let value = r?;
        checked?;
        Ok(value)
    }

    async fn save(&self, s: &local_client::Session) -> Result<(), ClientError> {
        if s.caught_rollback() {
            return Ok(());
        }
        self.store
            .save(&s.server_id(), s.user(), &s.state())
            .await?;
        Ok(())
    }
}

/// A logged-in account.
#[wasm_bindgen]
pub struct Session {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Session {
    /// The account's user name.
    #[wasm_bindgen(getter)]
    pub fn user(&self) -> Option<String> {
        let s = self.inner.session.borrow();
        s.as_ref().map(|s| s.user().as_str().into())
    }

    /// Seals `secret` (a `Uint8Array`) here and stores it as `name`; with `replace`, over
    /// an existing one. Resolves to its version. `NAME_EXISTS` without `replace`.
    pub fn store(&self, name: String, secret: Uint8Array, replace: bool) -> Promise {
        let inner = self.inner.clone();
        let bytes = SecretBytes::new(secret.to_vec());
        promise(async move {
            let s = inner.session()?;
            let n = secret_name(&name)?;
            let r = s.store(&n, &bytes, replace).await;
            inner.finish(&s, r).await.map(num)
        })
    }

    /// The secret `name`, opened here: a `Uint8Array`. `NOT_FOUND` if there is none.
    pub fn retrieve(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let n = secret_name(&name)?;
            let r = s.retrieve(&n).await;
            let (secret, _version) = inner.finish(&s, r).await?;
            Ok(JsValue::from(Uint8Array::from(secret.expose_secret())))
        })
    }

    /// The account's secrets: `[{name, version, size, created}]`.
    pub fn list(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let r = s.list().await;
            let listed = inner.finish(&s, r).await?;
            let out = Array::new();
            for l in listed {
                let o = Object::new();
                set(&o, "name", l.name.as_str());
                set(&o, "version", num(l.version));
                set(&o, "size", num(l.size));
                set(&o, "created", num(l.created));
                out.push(&o);
            }
            Ok(JsValue::from(out))
        })
    }

    /// Deletes the secret `name`. `NOT_FOUND` if there is none.
    pub fn delete(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let n = secret_name(&name)?;
            let r = s.delete(&n).await;
            inner.finish(&s, r).await.map(|()| JsValue::UNDEFINED)
        })
    }

    /// The account's audit log, checked here: `{chainVerified, error, pinned, events:
    /// [{seq, time, kind, secret, outcome, version, key, digest, hash}]}`. A verified log
    /// leaves a checkpoint for the account's other devices (`checkpointLeft`).
    pub fn audit(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let report = s.audit().await?;
            let left = match (
                report.verification.is_ok(),
                report.pinned,
                report.events.last(),
            ) {
                (true, Some(_), Some(last)) => {
                    let end = AuditPosition {
                        seq: last.seq,
                        head: last.hash,
                    };
                    s.save_checkpoint(end).await?;
                    Some(end)
                }
                _ => None,
            };
            inner.save(&s).await?;
            let doc = Object::new();
            set(&doc, "chainVerified", report.verification.is_ok());
            set(
                &doc,
                "error",
                report
                    .verification
                    .as_ref()
                    .err()
                    .map_or(JsValue::NULL, |e| e.to_string().into()),
            );
            set(
                &doc,
                "pinned",
                report.pinned.map_or(JsValue::NULL, |p| position(p).into()),
            );
            set(
                &doc,
                "checkpointLeft",
                left.map_or(JsValue::NULL, |p| position(p).into()),
            );
            let events = Array::new();
            for e in &report.events {
                let o = Object::new();
                set(&o, "seq", num(e.seq));
                set(&o, "time", num(e.time));
                set(&o, "kind", e.body.kind.as_str());
                let secret = e.body.secret.as_ref().map(|t| report.secret_name(t));
                set(&o, "secret", secret.map_or(JsValue::NULL, JsValue::from));
                set(&o, "outcome", e.body.outcome.as_str());
                set(&o, "version", e.body.version.map_or(JsValue::NULL, num));
                let key = e.body.key.as_ref().map(|k| k.as_str().to_string());
                set(&o, "key", key.map_or(JsValue::NULL, JsValue::from));
                let digest = e.body.digest.as_ref().map(hex::encode);
                set(&o, "digest", digest.map_or(JsValue::NULL, JsValue::from));
                set(&o, "hash", hex::encode(e.hash));
                events.push(&o);
            }
            set(&doc, "events", events);
            Ok(JsValue::from(doc))
        })
    }

    /// Changes the password from `current` to `next`. Every other session of the account
    /// ends.
    #[wasm_bindgen(js_name = changePassword)]
    pub fn change_password(&self, current: JsValue, next: JsValue) -> Promise {
        let inner = self.inner.clone();
        let (current, next) = (password(&current), password(&next));
        promise(async move {
            let s = inner.session()?;
            let r = s.change_password(&current?, &next?).await;
            inner.finish(&s, r).await.map(|()| JsValue::UNDEFINED)
        })
    }

    /// Asks the server to make a key `name` (`"ed25519"` or `"secp256k1"`) and hold it;
    /// resolves to `{name, algorithm, publicKey, exportable, created, signatures}`.
    #[wasm_bindgen(js_name = generateKey)]
    pub fn generate_key(&self, name: String, algorithm: String, exportable: bool) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let n = key_name(&name)?;
            let a = algorithm_named(&algorithm)?;
            let r = s.generate_key(&n, a, exportable).await;
            inner
                .finish(&s, r)
                .await
                .map(|i| JsValue::from(key_info(&i)))
        })
    }

    /// The key `name` as the server holds it (its public key checked against the one
    /// first seen).
    #[wasm_bindgen(js_name = publicKey)]
    pub fn public_key(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let n = key_name(&name)?;
            let r = s.key(&n).await;
            inner
                .finish(&s, r)
                .await
                .map(|i| JsValue::from(key_info(&i)))
        })
    }

    /// The keys the server holds for the account.
    #[wasm_bindgen(js_name = listKeys)]
    pub fn list_keys(&self) -> Promise {
        let inner = self.inner.clone();
        promise(async move {
            let s = inner.session()?;
            let r = s.list_keys().await;
            let keys = inner.finish(&s, r).await?;
            let out = Array::new();
            for k in &keys {
                out.push(&key_info(k));
            }
            Ok(JsValue::from(out))
        })
    }

    /// Signs `message` (a `Uint8Array`) with the key `name`; `options`: `{hash: "sha256" |
    /// "keccak256" | "none", recoverable: bool}` for secp256k1. Resolves to the signature
    /// (a `Uint8Array`), checked here against the key's public key.
    pub fn sign(&self, name: String, message: Uint8Array, options: Option<Object>) -> Promise {
        let inner = self.inner.clone();
        let message = message.to_vec();
        let opt = |k: &str| {
            options
                .as_ref()
                .and_then(|o| Reflect::get(o, &JsValue::from_str(k)).ok())
        };
        let hash = opt("hash").and_then(|h| h.as_string());
        let recoverable = opt("recoverable")
            .and_then(|r| r.as_bool())
            .unwrap_or(false);
        promise(async move {
            let s = inner.session()?;
            let n = key_name(&name)?;
            let hash = match hash {
                None => None,
                Some(h) => Some(
                    MessageHash::ALL
                        .into_iter()
                        .find(|m| m.as_str() == h)
                        .ok_or_else(|| {
                            ClientError::InvalidInput(format!(
                                "unknown hash {h:?} (sha256, keccak256 or none)"
                            ))
                        })?,
                ),
            };
            let options = SignOptions { hash, recoverable };
            let r = s.sign(&n, &message, options).await;
            let signed = inner.finish(&s, r).await?;
            Ok(JsValue::from(Uint8Array::from(signed.signature.as_slice())))
        })
    }

    /// Gives the server a private key (32 raw bytes of `algorithm`, a `Uint8Array`, zeroed
    /// once the server holds it) to hold as `name`; resolves to what it holds (its public key checked
    /// against the one computed here).
    #[wasm_bindgen(js_name = importKey)]
    pub fn import_key(
        &self,
        name: String,
        algorithm: String,
        private_key: Uint8Array,
        exportable: bool,
    ) -> Promise {
        let inner = self.inner.clone();
        let bytes = zeroize::Zeroizing::new(private_key.to_vec());
        promise(async move {
            let s = inner.session()?;
            let n = key_name(&name)?;
            let key = PrivateKey::from_bytes(algorithm_named(&algorithm)?, &bytes)
                .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
            drop(bytes);
            let r = s.import_key(&n, &key, exportable).await;
            let info = inner.finish(&s, r).await?;
            // The server holds it now: the page's copy is zeroed (kept on any failure,
            // where it may be the only one).
            private_key.fill(0, 0, private_key.length());
            Ok(JsValue::from(key_info(&info)))
        })
    }

    /// The private key of `name` (made exportable), as a `Uint8Array` of 32 raw bytes;
    /// `password` is the account's (proven again first). The one call that hands key
    /// material to JavaScript, because the page asked for it.
    #[wasm_bindgen(js_name = exportKey)]
    pub fn export_key(&self, name: String, password_value: JsValue) -> Promise {
        let inner = self.inner.clone();
        let pw = password(&password_value);
        promise(async move {
            let s = inner.session()?;
            let n = key_name(&name)?;
            let r = s.export_key(&n, &pw?).await;
            let key = inner.finish(&s, r).await?;
            Ok(JsValue::from(Uint8Array::from(&key.expose_secret()[..])))
        })
    }

    /// Deletes the key `name`; `password` is the account's (proven again first).
    #[wasm_bindgen(js_name = deleteKey)]
    pub fn delete_key(&self, name: String, password_value: JsValue) -> Promise {
        let inner = self.inner.clone();
        let pw = password(&password_value);
        promise(async move {
            let s = inner.session()?;
            let n = key_name(&name)?;
            let r = s.delete_key(&n, &pw?).await;
            inner.finish(&s, r).await.map(|()| JsValue::UNDEFINED)
        })
    }

    /// Ends the session on the server, and forgets its keys here (at once, or when its
    /// requests in flight end).
    pub fn logout(&self) -> Promise {
        let taken = self.inner.session.borrow_mut().take();
        promise(async move {
            let s = taken.ok_or(ClientError::SessionEnded)?;
            s.logout().await?;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// Runs the key-stretching function once, with the parameters of every login (argon2id,
/// 64 MiB, 3 passes, 4 lanes), on a fixed input: how long a login's deliberately slow part
/// takes on this device (a page may time it to warn users of slow devices).
#[wasm_bindgen(js_name = stretchOnce)]
pub fn stretch_once() -> Result<(), JsValue> {
    let argon = KsfParams::default()
        .argon2()
        .map_err(|_| to_js(ClientError::Protocol("bad key-stretching parameters")))?;
    let mut out = zeroize::Zeroizing::new([0u8; 64]);
    argon
        .hash_password_into(b"not a password", b"not a salt, fixed", &mut out[..])
        .map_err(|_| to_js(ClientError::Protocol("the key-stretching function failed")))?;
    Ok(())
}
