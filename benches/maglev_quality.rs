//! Maglev quality, as the paper (NSDI 2016, §5.3) reports it, for 10, 100 and 1,000 equal
//! backends at table sizes 65,537 and 655,373: load imbalance (max / mean entries per
//! backend), the fraction of the table that changes owner when one backend is removed or
//! added, next to the ideal (1/N and 1/(N+1): only the removed or added backend's share
//! moves), and build time. Prints a Markdown table.
//! Run: `cargo bench --bench maglev_quality`.

use dataplane::maglev::{MaglevBackend, MaglevTable};
use std::time::Instant;

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

fn build(ids: &[String], m: u32) -> MaglevTable {
    let bs: Vec<MaglevBackend> = ids
        .iter()
        .map(|i| MaglevBackend {
            identity: i.as_bytes(),
            weight: 1,
        })
        .collect();
    MaglevTable::build(&bs, m).expect("prime size, enough entries")
}

/// Fraction of entries whose owner (by identity) differs between two tables.
fn moved(a: &MaglevTable, a_ids: &[String], b: &MaglevTable, b_ids: &[String]) -> f64 {
    let changed = a
        .entries()
        .iter()
        .zip(b.entries())
        .filter(|(x, y)| a_ids[**x as usize] != b_ids[**y as usize])
        .count();
    changed as f64 / a.size() as f64
}

fn main() {
    // `cargo bench` passes --bench; any other argument is ignored.
    println!("| table size | backends | max/mean load | moved on remove (ideal 1/N) | moved on add (ideal 1/(N+1)) | build time |");
    println!("| ---: | ---: | ---: | --- | --- | ---: |");
    for m in [65537u32, 655373] {
        for n in [10usize, 100, 1000] {
            let all = ids(n + 1);
            let base = &all[..n];
            let t0 = Instant::now();
            let reps = 5;
            let mut t = build(base, m);
            for _ in 1..reps {
                t = build(base, m);
            }
            let build_ms = t0.elapsed().as_secs_f64() * 1000.0 / reps as f64;
            let shares = t.shares(n);
            let mean = m as f64 / n as f64;
            let max = *shares.iter().max().unwrap_or(&0) as f64;
            let mut fewer = base.to_vec();
            fewer.remove(n / 2);
            let removed = moved(&t, base, &build(&fewer, m), &fewer);
            let more = all.clone();
            let added = moved(&t, base, &build(&more, m), &more);
            println!(
                "| {m} | {n} | {:.4} | {:.3}% ({:.3}%) | {:.3}% ({:.3}%) | {build_ms:.1} ms |",
                max / mean,
                removed * 100.0,
                100.0 / n as f64,
                added * 100.0,
                100.0 / (n + 1) as f64
            );
        }
    }
}
