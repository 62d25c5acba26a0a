//! Writes the committed capture fixtures from `pcap::synth`:
//!   `cargo run -p pcap --bin make-fixtures -- <repo root>`
//! or a throughput capture of N flows with K frames each (not committed; benches make it):
//!   `cargo run -p pcap --bin make-fixtures -- --bench N K OUT.pcap [FIRST_FLOW]`
use std::path::Path;

fn write(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let bytes = pcap::to_bytes(frames.iter().map(|(t, f)| (*t, f.as_slice())));
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("wrote {} ({} frames)", path.display(), frames.len());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--bench") {
        let usage = "usage: make-fixtures --bench FLOWS FRAMES_PER_FLOW OUT.pcap [FIRST_FLOW]";
        let flows: u32 = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
        let per: u32 = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
        let out = args.get(3).expect(usage);
        let first: u32 = args
            .get(4)
            .map_or(Some(0), |s| s.parse().ok())
            .expect(usage);
        write(
            Path::new(out),
            &pcap::synth::bench_capture_from(first, flows, per),
        );
        return;
    }
    let root = Path::new(args.first().map(String::as_str).unwrap_or("."));
    write(
        &root.join("examples/sample.pcap"),
        &pcap::synth::sample_capture(),
    );
    let t0 = 1_767_225_600_000_000_000u64;
    let bad: Vec<(u64, Vec<u8>)> = pcap::synth::malformed_frames()
        .into_iter()
        .enumerate()
        .map(|(i, (_, f))| (t0 + i as u64 * 1000, f))
        .collect();
    write(&root.join("tests/fixtures/malformed.pcap"), &bad);
}
