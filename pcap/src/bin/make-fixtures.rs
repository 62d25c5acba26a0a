//! Writes the committed capture fixtures from `pcap::synth`:
//! `cargo run -p pcap --bin make-fixtures -- <repo root>`.
use std::path::Path;

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let root = Path::new(&root);
    let write = |rel: &str, frames: &[(u64, Vec<u8>)]| {
        let bytes = pcap::to_bytes(frames.iter().map(|(t, f)| (*t, f.as_slice())));
        let path = root.join(rel);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {} ({} frames)", path.display(), frames.len());
    };
    write("examples/sample.pcap", &pcap::synth::sample_capture());
    let t0 = 1_767_225_600_000_000_000u64;
    let bad: Vec<(u64, Vec<u8>)> = pcap::synth::malformed_frames()
        .into_iter()
        .enumerate()
        .map(|(i, (_, f))| (t0 + i as u64 * 1000, f))
        .collect();
    write("tests/fixtures/malformed.pcap", &bad);
}
