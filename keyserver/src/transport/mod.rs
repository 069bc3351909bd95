//! Transports carry request and response envelopes and nothing else: they read one
//! request's bytes (bounded by `MAX_MESSAGE`), hand them to [`crate::dispatch::Core`], and
//! write back the bytes it returns. No protocol decision is made here.

pub mod quic;
pub mod tls;
