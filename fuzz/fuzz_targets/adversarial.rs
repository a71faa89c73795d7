//! Fuzz target: libFuzzer's bytes decoded into a program of ordinary heap
//! calls and misuses (`tests/common/adversary.rs`, shared with
//! `tests/adversarial.rs`), replayed against the shadow model. It panics
//! (a crash for libFuzzer) when an invariant fails: live data changed, a
//! bad block handed out, a canary overwritten, a double or interior free
//! accepted, an error on an intact heap; with feature `crc`, also when
//! damage to heap metadata went unreported. Hangs are libFuzzer timeouts.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/adversary.rs"]
mod adversary;

fuzz_target!(|data: &[u8]| {
    let outcome = adversary::run(&adversary::decode(data));
    if cfg!(feature = "crc") {
        assert!(
            !outcome.metadata_damaged || outcome.detected,
            "metadata damage went unnoticed: {}",
            adversary::describe(&outcome)
        );
    }
});
