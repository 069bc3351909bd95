//! A small AWS KMS client: the JSON 1.1 API (`TrentService.*`) over HTTP/1.1, one request
//! per connection, signed with SigV4 (`aws-sigv4`), over any byte stream.
//!
//! Why not `aws-sdk-kms`: the server must reach KMS from inside a Nitro enclave, which has no
//! network of its own: its bytes go over vsock to a relay on the host, and TLS must end inside
//! the enclave so that the host sees only ciphertext. The SDK's HTTP stack is built to open
//! its own sockets; here the stream is the caller's ([`Connector`]): a TCP connection, or the
//! vsock relay. What this client does besides (a few JSON calls, bounded retries) is small
//! enough to read whole. The signing is `aws-sigv4`'s, the HTTP is `hyper`'s, the TLS
//! `rustls`' with the Mozilla roots: nothing of the protocol is written here.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

use super::credentials::Credentials;

/// Largest response body read from KMS.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Attempts of one call when KMS throttles, fails on its side, or cannot be reached.
const ATTEMPTS: u32 = 5;
/// The first pause between attempts; it doubles.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// How long one attempt may take, connection included. Five attempts and their pauses
/// (23 s in all) end before the server's 25 s limit to unwrap its keys at start, so a KMS
/// that never answers is reported with its endpoint and last error.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// A byte stream to KMS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens byte streams to a host and port: TCP, or (in an enclave) a relay.
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// A stream to `host:port`.
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Box<dyn Stream>>;
}

/// Plain TCP.
#[derive(Debug, Default)]
pub struct TcpConnector;

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Box<dyn Stream>> {
        let s = tokio::net::TcpStream::connect((host, port)).await?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}

/// What went wrong with a KMS call.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// KMS could not be reached (or answered nothing useful) within the attempts.
    #[error("KMS at {endpoint} cannot be reached: {error}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The last error.
        error: String,
    },
    /// KMS refused the call.
    #[error("KMS at {endpoint} refused {action}: {code}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The call.
        action: &'static str,
        /// The error's type, as KMS names it (`DisabledException`, `AccessDeniedException`,
        /// `InvalidCiphertextException`, `SignatureDoesNotMatch`, …).
        code: String,
        /// KMS's message (never holds key material).
        message: String,
    },
    /// KMS answered something this client cannot use.
    #[error("KMS at {endpoint} answered {action} with something unusable: {why}")]
    BadResponse {
        /// The endpoint.
        endpoint: String,
        /// The call.
        action: &'static str,
        /// Why.
        why: String,
    },
}

impl KmsError {
    /// The KMS error type, if KMS refused the call.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Where KMS is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` or (for emulators on loopback) `http`.
    pub tls: bool,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `https://host[:port]` or `http://host[:port]` (a path is not allowed).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{url}: a KMS endpoint starts with https:// or http://"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(format!(
                "{url}: a KMS endpoint is a scheme, a host and a port"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("{url}: the port is not a number"))?,
            ),
            _ => (rest.to_string(), if tls { 443 } else { 80 }),
        };
        // Decrypt answers carry keys: in clear only to this machine (an emulator).
        if !tls && !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!(
                "{url}: http:// is allowed only on loopback (127.0.0.1, localhost, [::1]): \
                 KMS answers carry keys"
            ));
        }
        Ok(Self { tls, host, port })
    }

    /// AWS's endpoint for `region`.
    pub fn aws(region: &str) -> Self {
        Self {
            tls: true,
            host: format!("kms.{region}.amazonaws.com"),
            port: 443,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            format!("{scheme}://{}/", self.host)
        } else {
            format!("{scheme}://{}:{}/", self.host, self.port)
        }
    }

    fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url().trim_end_matches('/'))
    }
}

/// An encryption context: key-value pairs KMS binds to a ciphertext (associated data).
pub type Context = std::collections::BTreeMap<String, String>;

/// The secret half of an answer: the key in clear, or (to a request that named a
/// recipient) the key encrypted to that recipient, which only it can open.
pub enum Secret {
    /// The key in clear (no recipient was named).
    Plain(Zeroizing<Vec<u8>>),
    /// `CiphertextForRecipient`: CMS EnvelopedData for the recipient's key.
    ForRecipient(Vec<u8>),
}

/// A data key from `GenerateDataKey`.
pub struct DataKey {
    /// The key itself, in clear or for the recipient.
    pub secret: Secret,
    /// The key wrapped by the KMS key: what is stored.
    pub ciphertext_blob: Vec<u8>,
}

/// A `Recipient` for `GenerateDataKey` and `Decrypt`: KMS then answers with the plaintext
/// encrypted to the public key in the attestation document (`CiphertextForRecipient`) and
/// never with the plaintext itself.
#[derive(Clone)]
pub struct Recipient {
    /// The Nitro attestation document, carrying the recipient's RSA public key.
    pub attestation_document: Vec<u8>,
}

/// The state of a KMS key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDescription {
    /// Its ARN.
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, …
    pub state: String,
}

/// A KMS client.
#[derive(Clone)]
pub struct KmsClient {
    endpoint: Endpoint,
    region: String,
    credentials: Credentials,
    connector: Arc<dyn Connector>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    // The ring provider supports the safe defaults: this cannot fail.
    Arc::new(config.unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3")))
}

/// Overwrites the string `field` of `v` (a key in base64, in a request or an answer) with
/// zeros before it is dropped. (Copies inside hyper's and rustls' buffers are not reached.)
fn wipe(v: &mut Value, field: &str) {
    if let Some(Value::String(s)) = v.get_mut(field) {
        zeroize::Zeroize::zeroize(s);
    }
}

fn b64(v: &Value, field: &str) -> Option<Vec<u8>> {
    v.get(field)?.as_str().and_then(|s| B64.decode(s).ok())
}

impl KmsClient {
    /// A client of KMS at `endpoint` in `region`, signing as `credentials`, over streams
    /// from `connector`.
    pub fn new(
        endpoint: Endpoint,
        region: String,
        credentials: Credentials,
        connector: Arc<dyn Connector>,
    ) -> Self {
        Self {
            endpoint,
            region,
            credentials,
            connector,
            tls: tls_config(),
        }
    }

    /// Where this client sends its calls.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `GenerateDataKey`: a fresh 256-bit data key, wrapped by `key_id` under `context`.
    pub async fn generate_data_key(
        &self,
        key_id: &str,
        context: &Context,
        recipient: Option<&Recipient>,
    ) -> Result<DataKey, KmsError> {
        const ACTION: &str = "GenerateDataKey";
        let mut body = json!({
            "KeyId": key_id,
            "KeySpec": "AES_256",
            "EncryptionContext": context,
        });
        add_recipient(&mut body, recipient);
        let mut v = self.call(ACTION, &body).await?;
        let ciphertext_blob =
            b64(&v, "CiphertextBlob").ok_or_else(|| self.bad(ACTION, "no CiphertextBlob"))?;
        Ok(DataKey {
            secret: self.secret_of(ACTION, &mut v, recipient)?,
            ciphertext_blob,
        })
    }

    /// `Decrypt`: the data key wrapped in `blob`, which must have been wrapped under
    /// `context` (and, if given, by `key_id`). With a recipient, the answer is the key
    /// encrypted to it; a plaintext in the answer is refused.
    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &Context,
        key_id: Option<&str>,
        recipient: Option<&Recipient>,
    ) -> Result<Decrypted, KmsError> {
        const ACTION: &str = "Decrypt";
        let mut body = json!({
            "CiphertextBlob": B64.encode(blob),
            "EncryptionContext": context,
        });
        if let Some(k) = key_id {
            body["KeyId"] = json!(k);
        }
        add_recipient(&mut body, recipient);
        let mut v = self.call(ACTION, &body).await?;
        Ok(Decrypted {
            secret: self.secret_of(ACTION, &mut v, recipient)?,
            key_id: v.get("KeyId").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// `Encrypt`: `plaintext` wrapped by `key_id` under `context`.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &Context,
    ) -> Result<Vec<u8>, KmsError> {
        const ACTION: &str = "Encrypt";
        let mut body = json!({
            "KeyId": key_id,
            "Plaintext": B64.encode(plaintext),
            "EncryptionContext": context,
        });
        let v = self.call(ACTION, &body).await;
        wipe(&mut body, "Plaintext");
        let v = v?;
        b64(&v, "CiphertextBlob").ok_or_else(|| self.bad(ACTION, "no CiphertextBlob"))
    }

    /// `ReEncrypt`: `blob` (wrapped under `context`) wrapped again by `to_key_id`, without
    /// the plaintext leaving KMS.
    pub async fn re_encrypt(
        &self,
        blob: &[u8],
        context: &Context,
        to_key_id: &str,
    ) -> Result<Vec<u8>, KmsError> {
        const ACTION: &str = "ReEncrypt";
        let body = json!({
            "CiphertextBlob": B64.encode(blob),
            "SourceEncryptionContext": context,
            "DestinationKeyId": to_key_id,
            "DestinationEncryptionContext": context,
        });
        let v = self.call(ACTION, &body).await?;
        b64(&v, "CiphertextBlob").ok_or_else(|| self.bad(ACTION, "no CiphertextBlob"))
    }

    /// `DescribeKey`: the key's ARN and state.
    pub async fn describe_key(&self, key_id: &str) -> Result<KeyDescription, KmsError> {
        const ACTION: &str = "DescribeKey";
        let v = self.call(ACTION, &json!({ "KeyId": key_id })).await?;
        let m = v
            .get("KeyMetadata")
            .ok_or_else(|| self.bad(ACTION, "no KeyMetadata"))?;
        let field = |f: &str| {
            m.get(f)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| self.bad(ACTION, &format!("no {f}")))
        };
        Ok(KeyDescription {
            arn: field("Arn")?,
            state: field("KeyState")?,
        })
    }

    /// `CreateKey` (a symmetric key): its id. For tests and for operators' tooling.
    pub async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        const ACTION: &str = "CreateKey";
        let v = self
            .call(ACTION, &json!({ "Description": description }))
            .await?;
        v.pointer("/KeyMetadata/KeyId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.bad(ACTION, "no KeyId"))
    }

    /// `DisableKey`.
    pub async fn disable_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.call("DisableKey", &json!({ "KeyId": key_id }))
            .await
            .map(drop)
    }

    /// `EnableKey`.
    pub async fn enable_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.call("EnableKey", &json!({ "KeyId": key_id }))
            .await
            .map(drop)
    }

    fn bad(&self, action: &'static str, why: &str) -> KmsError {
        KmsError::BadResponse {
            endpoint: self.endpoint.to_string(),
            action,
            why: why.to_string(),
        }
    }

    /// The secret part of an answer: the plaintext, or (with a recipient) the ciphertext
    /// for it, never the plaintext.
    fn secret_of(
        &self,
        action: &'static str,
        v: &mut Value,
        recipient: Option<&Recipient>,
    ) -> Result<Secret, KmsError> {
        let plaintext = b64(v, "Plaintext").map(Zeroizing::new);
        wipe(v, "Plaintext");
        match recipient {
            None => match plaintext {
                Some(p) => Ok(Secret::Plain(p)),
                None => Err(self.bad(action, "no Plaintext")),
            },
            Some(_) => {
                if plaintext.is_some() {
                    // The key would have crossed the host in clear: never use it.
                    return Err(self.bad(
                        action,
                        "a Plaintext in an answer to a request for a recipient",
                    ));
                }
                let c = b64(v, "CiphertextForRecipient")
                    .ok_or_else(|| self.bad(action, "no CiphertextForRecipient"))?;
                Ok(Secret::ForRecipient(c))
            }
        }
    }

    /// One call, with bounded retries when KMS throttles, fails on its side or cannot be
    /// reached.
    async fn call(&self, action: &'static str, body: &Value) -> Result<Value, KmsError> {
        let body =
            Zeroizing::new(serde_json::to_vec(body).map_err(|e| self.bad(action, &e.to_string()))?);
        let mut pause = FIRST_PAUSE;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, self.once(action, &body)).await;
            match outcome {
                Ok(Ok((status, bytes))) => match self.answer(action, status, &bytes) {
                    Ok(v) => return Ok(v),
                    Err(Retry::No(e)) => return Err(e),
                    Err(Retry::Yes(why)) => last = why,
                },
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
            }
            if attempt < ATTEMPTS {
                tracing::warn!(action, attempt, error = %last, "KMS call failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Err(KmsError::Unreachable {
            endpoint: self.endpoint.to_string(),
            error: last,
        })
    }

    /// Sends one signed request on a new connection; the status and the body.
    async fn once(&self, action: &str, body: &[u8]) -> Result<(u16, Zeroizing<Vec<u8>>), String> {
        let request = self.signed(action, body)?;
        let stream = self
            .connector
            .connect(&self.endpoint.host, self.endpoint.port)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if self.endpoint.tls {
            let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
                .map_err(|e| format!("server name: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(tls, request).await
        } else {
            send(stream, request).await
        }
    }

    /// The request for `action`, signed with SigV4.
    fn signed(
        &self,
        action: &str,
        body: &[u8],
    ) -> Result<http::Request<Full<bytes::Bytes>>, String> {
        use aws_sigv4::{
            http_request::{SignableBody, SignableRequest, SigningSettings, sign},
            sign::v4,
        };
        let target = format!("TrentService.{action}");
        let host = self.endpoint.authority();
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let identity = self.credentials.identity();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(signing_time())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let url = self.endpoint.url();
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        let mut builder = http::Request::builder().method("POST").uri("/");
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        for (k, v) in instructions.headers() {
            builder = builder.header(k, v);
        }
        builder
            .header("content-length", body.len())
            .header("connection", "close")
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))
            .map_err(|e| format!("request: {e}"))
    }

    /// What an answer means: its JSON, or whether to try again.
    fn answer(&self, action: &'static str, status: u16, body: &[u8]) -> Result<Value, Retry> {
        if status == 200 {
            return serde_json::from_slice(body)
                .map_err(|_| Retry::No(self.bad(action, "not JSON")));
        }
        let (code, message) = error_of(body);
        let throttled = status == 429
            || status >= 500
            || code.ends_with("ThrottlingException")
            || code.ends_with("KMSInternalException")
            || code.ends_with("DependencyTimeoutException");
        if throttled {
            return Err(Retry::Yes(format!("HTTP {status} {code}")));
        }
        Err(Retry::No(KmsError::Refused {
            endpoint: self.endpoint.to_string(),
            action,
            code: if code.is_empty() {
                format!("HTTP {status}")
            } else {
                code
            },
            message,
        }))
    }
}

enum Retry {
    Yes(String),
    No(KmsError),
}

/// What KMS said was wrong: its JSON (`__type`, `message`) or, from an HTTP layer in front
/// of it, XML (`<Code>`, `<Message>`). Bounded: messages are cut at 300 characters.
fn error_of(body: &[u8]) -> (String, String) {
    let cut = |s: &str| s.chars().take(300).collect::<String>();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let code = v
            .get("__type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_default();
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .map(cut)
            .unwrap_or_default();
        return (code, message);
    }
    let text = String::from_utf8_lossy(body);
    let tag = |t: &str| {
        let open = format!("<{t}>");
        let close = format!("</{t}>");
        text.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(inside, _)| cut(inside.trim()))
            .unwrap_or_default()
    };
    (tag("Code"), tag("Message"))
}

fn add_recipient(body: &mut Value, recipient: Option<&Recipient>) {
    if let Some(r) = recipient {
        body["Recipient"] = json!({
            "AttestationDocument": B64.encode(&r.attestation_document),
            "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
        });
    }
}

/// What `Decrypt` answered.
pub struct Decrypted {
    /// The data key, in clear or for the recipient.
    pub secret: Secret,
    /// The KMS key that had wrapped it.
    pub key_id: Option<String>,
}

/// The time a request is signed at. SigV4 signs the wall-clock time, and KMS refuses a
/// signature more than five minutes from its own clock; the server's request clock
/// (`clock::Now`) is a different thing and is not involved.
#[allow(
    clippy::disallowed_methods,
    reason = "SigV4 needs the wall clock, read here and nowhere else in this client"
)]
fn signing_time() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Sends `request` on `stream` (HTTP/1.1), reads the answer (bounded).
async fn send<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    request: http::Request<Full<bytes::Bytes>>,
) -> Result<(u16, Zeroizing<Vec<u8>>), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("HTTP body: {e}"))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, Zeroizing::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_refuse_what_they_are_not() {
        assert_eq!(
            Endpoint::parse("https://kms.eu-west-1.amazonaws.com").unwrap(),
            Endpoint::aws("eu-west-1")
        );
        let local = Endpoint::parse("http://127.0.0.1:4566/").unwrap();
        assert_eq!(
            (local.tls, local.host.as_str(), local.port),
            (false, "127.0.0.1", 4566)
        );
        assert_eq!(local.to_string(), "http://127.0.0.1:4566");
        for bad in [
            "kms.amazonaws.com",
            "ftp://x",
            "https://",
            "https://h/path",
            "http://u@h",
            // Keys in clear over a network.
            "http://vpce-0123.kms.eu-west-1.vpce.amazonaws.com",
            "http://10.0.0.5:443",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_read_from_json_or_xml_and_bounded() {
        let (c, m) = error_of(
            br#"{"__type":"com.amazonaws.kms#DisabledException","message":"arn:x is disabled."}"#,
        );
        assert_eq!(
            (c.as_str(), m.as_str()),
            ("DisabledException", "arn:x is disabled.")
        );
        let (c, _) = error_of(
            b"<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message></Error></Errors></ErrorResponse>",
        );
        assert_eq!(c, "SignatureDoesNotMatch");
        let long = format!(r#"{{"__type":"X","message":"{}"}}"#, "m".repeat(10_000));
        assert_eq!(error_of(long.as_bytes()).1.len(), 300);
        assert_eq!(error_of(&[0xff, 0x00]), (String::new(), String::new()));
    }
}
