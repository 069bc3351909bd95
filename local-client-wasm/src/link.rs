//! Requests over a browser WebSocket: one binary message per frame of the TCP transport
//! (request id and envelope), many requests in flight, answers in any order.
//!
//! The `WebSocket` object is JavaScript's and cannot cross threads, while `Link` and
//! `Connector` are shared (`Send + Sync`) natively. So the socket lives in a task of its
//! own ([`wasm_bindgen_futures::spawn_local`]) with its event handlers; the link holds only
//! a queue to it and the table of requests waiting for their answer.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use keyserver_protocol::frame;
use local_client::{ClientError, Connector, Link, LinkError};
use tokio::sync::{mpsc, oneshot};
use wasm_bindgen::{JsCast, JsValue, closure::Closure, prelude::wasm_bindgen};
use web_sys::{BinaryType, MessageEvent, WebSocket};

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for its answer before the connection counts as lost. Above
/// the server's handshake timeout: a login's argon2 runs here, not there, but a slow
/// server's storage may take long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[wasm_bindgen]
extern "C" {
    // The global `setTimeout`, in a page and in a worker alike.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &JsValue, ms: i32) -> JsValue;
}

/// Calls `f` once after `d` (JavaScript's timer; nothing is held across an await).
fn after(d: Duration, f: impl FnOnce() + 'static) {
    let ms = i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    set_timeout(&Closure::once_into_js(f), ms);
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

fn waiters(w: &Waiters) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Vec<u8>>>> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One WebSocket connection.
#[derive(Debug)]
pub(crate) struct WsLink {
    out: mpsc::UnboundedSender<Vec<u8>>,
    waiting: Waiters,
    next_id: AtomicU64,
    dead: Arc<AtomicBool>,
}

#[async_trait]
impl Link for WsLink {
    async fn call(&self, request: &[u8]) -> Result<Vec<u8>, LinkError> {
        let lost = || LinkError::Lost("connection closed".into());
        if self.dead.load(Ordering::Acquire) {
            return Err(lost());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiters(&self.waiting).insert(id, tx);
        // Unanswered in time: drop the waiter, which fails the call below.
        let w = self.waiting.clone();
        after(REQUEST_TIMEOUT, move || {
            waiters(&w).remove(&id);
        });
        if self.out.send(frame::encode(id, request)).is_err() {
            waiters(&self.waiting).remove(&id);
            return Err(lost());
        }
        rx.await.map_err(|_| {
            LinkError::Lost(format!(
                "no answer (the connection closed, or {REQUEST_TIMEOUT:?} passed)"
            ))
        })
    }

    fn close(&self) {
        self.dead.store(true, Ordering::Release);
        // An empty message tells the socket's task to close it.
        let _ = self.out.send(Vec::new());
    }
}

/// Opens WebSocket links to one URL.
#[derive(Debug)]
pub(crate) struct WsConnector {
    url: String,
}

impl WsConnector {
    /// Links to `url` (`wss://HOST:PORT/v1`).
    pub(crate) fn new(url: &str) -> Result<Self, ClientError> {
        let is_wss = url.starts_with("wss://");
        // A plain ws:// URL only for this machine's loopback, for development.
        let is_local = ["ws://localhost", "ws://127.0.0.1", "ws://[::1]"]
            .iter()
            .any(|p| url.starts_with(p));
        if !is_wss && !is_local {
            return Err(ClientError::InvalidInput(format!(
                "{url:?}: the server's address is a wss:// URL (wss://HOST:PORT/v1)"
            )));
        }
        Ok(Self { url: url.into() })
    }
}

#[async_trait]
impl Connector for WsConnector {
    async fn connect(&self) -> Result<Arc<dyn Link>, ClientError> {
        let (opened_tx, opened_rx) = oneshot::channel::<Result<(), String>>();
        let (out, queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let waiting: Waiters = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        wasm_bindgen_futures::spawn_local(run(
            self.url.clone(),
            opened_tx,
            queue,
            waiting.clone(),
            dead.clone(),
        ));
        match opened_rx.await {
            Ok(Ok(())) => Ok(Arc::new(WsLink {
                out,
                waiting,
                next_id: AtomicU64::new(1),
                dead,
            })),
            Ok(Err(why)) => Err(ClientError::Unreachable(format!("{}: {why}", self.url))),
            Err(_) => Err(ClientError::Unreachable(format!("{}: closed", self.url))),
        }
    }
}

/// The socket's task: opens it, sends what the link queues, hands answers to their waiters,
/// and fails every waiter once the socket closes.
async fn run(
    url: String,
    opened: oneshot::Sender<Result<(), String>>,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    waiting: Waiters,
    dead: Arc<AtomicBool>,
) {
    let opened = Arc::new(Mutex::new(Some(opened)));
    let report = {
        let opened = opened.clone();
        move |r: Result<(), String>| {
            if let Some(tx) = opened.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = tx.send(r);
            }
        }
    };
    let ws = match WebSocket::new(&url) {
        Ok(ws) => ws,
        Err(e) => {
            report(Err(describe(&e)));
            return;
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);

    let on_open = {
        let report = report.clone();
        Closure::<dyn FnMut()>::new(move || report(Ok(())))
    };
    let on_message = {
        let (waiting, ws) = (waiting.clone(), ws.clone());
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let Ok(buf) = e.data().dyn_into::<js_sys::ArrayBuffer>() else {
                // Only binary frames are spoken: a server sending text is not ours.
                let _ = ws.close();
                return;
            };
            let bytes = js_sys::Uint8Array::new(&buf).to_vec();
            match frame::parse_exact(&bytes) {
                Some(f) => {
                    if let Some(w) = waiters(&waiting).remove(&f.id) {
                        let _ = w.send(f.body);
                    }
                }
                None => {
                    let _ = ws.close();
                }
            }
        })
    };
    // Closed (or failed, which closes): no request can be answered any more.
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    let on_close = {
        let (report, dead, waiting) = (report.clone(), dead.clone(), waiting.clone());
        Closure::<dyn FnMut(JsValue)>::new(move |_: JsValue| {
            report(Err("the connection failed or was refused".into()));
            dead.store(true, Ordering::Release);
            waiters(&waiting).clear();
            let _ = closed_tx.send(());
        })
    };
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    {
        let (report, ws) = (report.clone(), ws.clone());
        after(CONNECT_TIMEOUT, move || {
            if ws.ready_state() == WebSocket::CONNECTING {
                report(Err(format!("not open within {CONNECT_TIMEOUT:?}")));
                let _ = ws.close();
            }
        });
    }

    loop {
        let next = tokio::select! {
            m = queue.recv() => m,
            _ = closed_rx.recv() => None,
        };
        match next {
            // Sent while open; a failed send closes the socket, which fails the waiters.
            Some(m) if !m.is_empty() => {
                if ws.send_with_u8_array(&m).is_err() {
                    let _ = ws.close();
                }
            }
            // The link closed it, or dropped it, or the socket closed.
            _ => break,
        }
    }
    dead.store(true, Ordering::Release);
    waiters(&waiting).clear();
    ws.set_onopen(None);
    ws.set_onmessage(None);
    ws.set_onclose(None);
    let _ = ws.close();
    drop((on_open, on_message, on_close));
}

/// A JavaScript exception as text.
pub(crate) fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "unknown error".into())
}
