//! Arbitrary bytes as a sequence of router operations: after each, every
//! invariant listed in `pitboss_routing::fuzzing` must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = pitboss_routing::fuzzing::router_ops(data) {
        panic!("{broken}");
    }
});
