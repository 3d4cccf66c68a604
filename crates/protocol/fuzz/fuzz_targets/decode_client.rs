//! Arbitrary bytes as one WebSocket frame: `decode_client` must never panic and
//! must keep the promises listed in `pitboss_protocol::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = pitboss_protocol::fuzzing::decode_client(data) {
        panic!("{broken}");
    }
});
