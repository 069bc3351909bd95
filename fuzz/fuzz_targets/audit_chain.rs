#![no_main]
//! See `keyserver_protocol::fuzzing::audit_chain`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyserver_protocol::fuzzing::audit_chain(data));
