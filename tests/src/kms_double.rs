//! A KMS test double for the `nitro-kms` provider: the parts of AWS KMS's JSON API the
//! server calls (`DescribeKey`, `GenerateDataKey`, `Decrypt`, `Encrypt`), answering only
//! requests that carry a `Recipient` whose attestation document the project's verifier
//! accepts under a given root with the given PCRs, and then only with
//! `CiphertextForRecipient` in AWS's format: CMS `EnvelopedData`, one
//! `KeyTransRecipientInfo` (version 2, a 32-byte subject key identifier, RSAES-OAEP with
//! SHA-256 and MGF1-SHA-256) and the data key under AES-256-CBC. OpenSSL opens it
//! (`openssl cms -decrypt`), as it opens AWS's.
//!
//! It is a double, not an emulator: "ciphertext blobs" are handles to keys kept in its
//! memory, and it does not check request signatures (moto's KMS does, in the `aws-kms`
//! tests). What it checks is what the enclave's trust rests on: the attestation, the PCR
//! policy, the encryption context, and that no key ever leaves in clear.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use keyserver_protocol::attestation::{self, Expectations, TrustedRoot};
use rand::{RngCore, rngs::OsRng};
use rsa::{Oaep, RsaPublicKey, pkcs8::DecodePublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The key's ARN.
pub const KEY_ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/nitro-double";

/// What the double holds and counts.
#[derive(Default)]
struct State {
    /// PCRs required instead of the module's own.
    pcrs_instead: Option<BTreeMap<u8, Vec<u8>>>,
    keys: HashMap<Vec<u8>, (Vec<u8>, Value)>,
    /// Requests refused, by reason.
    refused: BTreeMap<String, u32>,
    /// Keys handed out, always for a recipient.
    answered: u32,
    /// Also answer `Plaintext` beside `CiphertextForRecipient` (what a KMS, or someone
    /// between it and the enclave, must never get the enclave to accept).
    leak_plaintext: bool,
}

/// A running double.
pub struct KmsDouble {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl KmsDouble {
    /// Serves on a free loopback port, trusting documents under the root of the simulated
    /// module in `module` (a data dir's `simulated-attestation/`, read at each request: it
    /// may not exist yet) with the PCRs it reports.
    pub fn start(module: std::path::PathBuf) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let state = Arc::new(Mutex::new(State::default()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr: SocketAddr = listener.local_addr().expect("its address");
        let policy = Arc::new(module);
        let s = state.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, policy) = (s.clone(), policy.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (s, policy) = (s.clone(), policy.clone());
                        async move {
                            let target = req
                                .headers()
                                .get("x-amz-target")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let (status, answer) = handle(&s, &policy, &target, &body);
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/x-amz-json-1.1")
                                    .body(Full::new(Bytes::from(answer.to_string())))
                                    .expect("a response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            state,
            _runtime: runtime,
        }
    }

    /// Requires `pcrs` from now on (another enclave image than the module's).
    pub fn expect_pcrs_instead(&self, pcrs: BTreeMap<u8, Vec<u8>>) {
        self.state.lock().expect("state").pcrs_instead = Some(pcrs);
    }

    /// Answers `Decrypt` with `Plaintext` too, from now on (or no longer).
    pub fn leak_plaintext(&self, leak: bool) {
        self.state.lock().expect("state").leak_plaintext = leak;
    }

    /// Requests refused, by reason.
    pub fn refused(&self) -> BTreeMap<String, u32> {
        self.state.lock().expect("state").refused.clone()
    }

    /// Data keys handed out (each encrypted to an attested recipient).
    pub fn answered(&self) -> u32 {
        self.state.lock().expect("state").answered
    }
}

fn error(kind: &str, message: &str) -> (u16, Value) {
    (400, json!({"__type": kind, "message": message}))
}

fn handle(
    state: &Mutex<State>,
    module: &std::path::Path,
    target: &str,
    body: &[u8],
) -> (u16, Value) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error("SerializationException", "not JSON");
    };
    let mut st = state.lock().expect("state");
    let action = target.strip_prefix("TrentService.").unwrap_or_default();
    if action == "DescribeKey" {
        return (
            200,
            json!({"KeyMetadata": {"Arn": KEY_ARN, "KeyId": "nitro-double", "KeyState": "Enabled"}}),
        );
    }
    let context = req.get("EncryptionContext").cloned().unwrap_or(json!({}));
    // Every key leaves only for an attested recipient: what a nitro-kms key policy says.
    let recipient = match policy(module, st.pcrs_instead.clone())
        .and_then(|policy| recipient_key(&req, &policy))
    {
        Ok(k) => k,
        Err(why) => {
            *st.refused.entry(why.clone()).or_default() += 1;
            return error("AccessDeniedException", &why);
        }
    };
    match action {
        "GenerateDataKey" => {
            let mut key = vec![0u8; 32];
            OsRng.fill_bytes(&mut key);
            let mut handle = vec![0u8; 24];
            OsRng.fill_bytes(&mut handle);
            let cms = cms_for(&recipient, &key);
            st.keys.insert(handle.clone(), (key, context));
            st.answered += 1;
            (
                200,
                json!({
                    "KeyId": KEY_ARN,
                    "CiphertextBlob": B64.encode(handle),
                    "CiphertextForRecipient": B64.encode(cms),
                }),
            )
        }
        "Decrypt" => {
            let Some(handle) = req
                .get("CiphertextBlob")
                .and_then(Value::as_str)
                .and_then(|b| B64.decode(b).ok())
            else {
                return error("ValidationException", "no CiphertextBlob");
            };
            match st.keys.get(&handle) {
                Some((key, c)) if *c == context => {
                    let cms = cms_for(&recipient, key);
                    let mut answer =
                        json!({"KeyId": KEY_ARN, "CiphertextForRecipient": B64.encode(cms)});
                    if st.leak_plaintext {
                        answer["Plaintext"] = json!(B64.encode(key));
                    }
                    st.answered += 1;
                    (200, answer)
                }
                _ => error(
                    "InvalidCiphertextException",
                    "no such ciphertext in this context",
                ),
            }
        }
        _ => error("UnsupportedOperationException", action),
    }
}

/// The root (DER) a document must chain to, and the PCRs it must carry.
type Policy = (Vec<u8>, BTreeMap<u8, Vec<u8>>);

/// The root (DER) and PCRs the key policy requires: the module's, or `instead`.
fn policy(
    module: &std::path::Path,
    instead: Option<BTreeMap<u8, Vec<u8>>>,
) -> Result<Policy, String> {
    let pem = std::fs::read(module.join("root.pem")).map_err(|e| format!("no root: {e}"))?;
    let root = pem_body(&String::from_utf8_lossy(&pem));
    if let Some(p) = instead {
        return Ok((root, p));
    }
    let text = std::fs::read(module.join("pcrs.json")).map_err(|e| format!("no PCRs: {e}"))?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&text).map_err(|e| format!("PCRs: {e}"))?;
    let pcrs = map
        .into_iter()
        .map(|(k, v)| {
            Ok((
                k.parse::<u8>().map_err(|e| e.to_string())?,
                (0..v.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&v[i..i + 2], 16).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<u8>, String>>()?,
            ))
        })
        .collect::<Result<_, String>>()?;
    Ok((root, pcrs))
}

/// The DER inside a one-certificate PEM.
fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(b64.trim()).unwrap_or_default()
}

/// The recipient's RSA key, if the request carries an attestation the policy accepts.
fn recipient_key(req: &Value, (root, pcrs): &Policy) -> Result<RsaPublicKey, String> {
    let r = req.get("Recipient").ok_or("no Recipient")?;
    if r.get("KeyEncryptionAlgorithm").and_then(Value::as_str) != Some("RSAES_OAEP_SHA_256") {
        return Err("KeyEncryptionAlgorithm is not RSAES_OAEP_SHA_256".into());
    }
    let doc = r
        .get("AttestationDocument")
        .and_then(Value::as_str)
        .and_then(|d| B64.decode(d).ok())
        .ok_or("no AttestationDocument")?;
    #[allow(
        clippy::disallowed_methods,
        reason = "a double of a service with a clock"
    )]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verified = attestation::verify(&doc, TrustedRoot::Der(root), now)
        .map_err(|e| format!("attestation: {e}"))?;
    Expectations {
        pcrs: pcrs.clone(),
        allow_debug: false,
        nonce: None,
        tls_spki: None,
        max_age_secs: Some(300),
    }
    .check(&verified, now)
    .map_err(|e| format!("attestation: {e}"))?;
    let public = verified
        .public_key
        .ok_or("the document carries no public key")?;
    RsaPublicKey::from_public_key_der(&public).map_err(|_| "the public key is not RSA".into())
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(u8::try_from(n).expect("short"));
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("a length"));
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

const OID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_RSAES_OAEP: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
const OID_MGF1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// `plaintext` as AWS's `CiphertextForRecipient` for `recipient`: CMS EnvelopedData (DER).
pub fn cms_for(recipient: &RsaPublicKey, plaintext: &[u8]) -> Vec<u8> {
    use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
    use rsa::pkcs8::EncodePublicKey;
    let mut content_key = [0u8; 32];
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut content_key);
    OsRng.fill_bytes(&mut iv);
    let encrypted_key = recipient
        .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &content_key)
        .expect("RSA-OAEP");
    let encrypted_content = cbc::Encryptor::<aes::Aes256>::new(&content_key.into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let ski = Sha256::digest(
        recipient
            .to_public_key_der()
            .expect("an encodable key")
            .as_bytes(),
    );
    let sha256 = seq(&[&tlv(0x06, OID_SHA256), &[0x05, 0x00]]);
    let oaep = seq(&[
        &tlv(0x06, OID_RSAES_OAEP),
        &seq(&[
            &tlv(0xa0, &sha256),
            &tlv(0xa1, &seq(&[&tlv(0x06, OID_MGF1), &sha256])),
        ]),
    ]);
    let ktri = seq(&[
        &[0x02, 0x01, 0x02],
        &tlv(0x80, &ski),
        &oaep,
        &tlv(0x04, &encrypted_key),
    ]);
    let eci = seq(&[
        &tlv(0x06, OID_DATA),
        &seq(&[&tlv(0x06, OID_AES256_CBC), &tlv(0x04, &iv)]),
        &tlv(0x80, &encrypted_content),
    ]);
    let enveloped = seq(&[&[0x02, 0x01, 0x02], &tlv(0x31, &ktri), &eci]);
    seq(&[&tlv(0x06, OID_ENVELOPED_DATA), &tlv(0xa0, &enveloped)])
}
