#![no_main]
//! See `keyserver_protocol::fuzzing::sealed_blobs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyserver_protocol::fuzzing::sealed_blobs(data));
