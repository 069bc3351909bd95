#![no_main]
//! The relay's wire as the enclave reads it from its host: an opening, then datagram frames
//! until the input ends or a frame is refused; never a panic, never more than a frame's
//! bound allocated.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

/// Polls `f` once: reading from a byte slice never waits.
fn now<T>(f: impl Future<Output = T>) -> Option<T> {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let Some(Ok(kind)) = now(keyserver::relay::read_opening(&mut r)) else {
        return;
    };
    if kind == keyserver::relay::KIND_TCP {
        let _ = now(keyserver::relay::read_address(&mut r));
        return;
    }
    let mut buf = Vec::new();
    while let Some(Ok((_, payload))) = now(keyserver::relay::read_datagram(&mut r, &mut buf)) {
        assert!(payload.end <= buf.len());
    }
});
