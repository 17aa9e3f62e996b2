//! Any bytes: the reader returns Ok or a typed error, never panics, never reads out of
//! bounds, never allocates beyond what the input can justify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = ferrite::gguf::Gguf::parse(data) {
        for t in &g.tensors {
            let bytes = g.tensor_bytes(data, t);
            assert_eq!(bytes.len() as u64, t.size);
        }
        let _ = ferrite::inspect::to_json(&g);
        let _ = ferrite::inspect::to_text(&g);
    }
});
