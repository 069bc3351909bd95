#![no_main]
//! The server's configuration file: any text parses to a config or an error, never a panic,
//! and a config that parses validates without panicking.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = keyserver::config::Config::from_toml(text) {
            let _ = config.validate();
        }
    }
});
