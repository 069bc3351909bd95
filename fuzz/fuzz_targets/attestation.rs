#![no_main]
//! See `keyserver_protocol::fuzzing::attestation`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyserver_protocol::fuzzing::attestation(data));
