//! Fuzz the Xlsx parser: it must never panic, hang or overflow the stack.
#![no_main]

use cairn_ingest::{parse, Kind, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(Kind::Xlsx, data, &Limits::default());
});
