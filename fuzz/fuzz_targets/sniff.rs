//! Fuzz type detection: the head sniffer and the zip container check.
#![no_main]

use cairn_ingest::detect::{sniff, zip_kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(8192)];
    for name in ["upload.txt", "upload.md", "upload.json", "upload.srt", "upload.csv", "upload"] {
        let _ = sniff(head, name);
    }
    let _ = zip_kind(data);
});
