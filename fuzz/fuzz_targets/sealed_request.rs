#![no_main]
//! See `keyserver_protocol::fuzzing::sealed_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyserver_protocol::fuzzing::sealed_request(data));
