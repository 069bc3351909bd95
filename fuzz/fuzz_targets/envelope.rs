#![no_main]
//! See `keyserver_protocol::fuzzing::envelope`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyserver_protocol::fuzzing::envelope(data));
