//! Any bytes a client sends before TLS: the SNI parser must answer without panicking,
//! and a name it returns must be a lowercase DNS name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_proxy::fuzzing::client_hello::parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = parse(data)
        && let Some(name) = info.sni
    {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
    }
});
