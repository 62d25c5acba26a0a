//! Captures as users have them, from Wireshark's own tools (Debian's wireshark-common, which
//! the test command installs): a pcapng made by `editcap` from the sample capture and one from
//! a nanosecond pcap replay exactly as the pcap does; a live multi-interface pcapng from
//! `dumpcap` on two veth interfaces replays every packet; and `--output-format pcapng` writes a
//! file Wireshark's `capinfos` and `editcap` read back to the same frames.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tool(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (apt-get install wireshark-common): {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn replay(config: &Path, input: &Path, out: &Path, format: &str) -> serde_json::Value {
    let stats = out.with_extension("json");
    let o = sluice(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--output-format",
        format,
        "--stats",
        stats.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        o.status.success(),
        "replay {}: {}",
        input.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stats).unwrap()).unwrap();
    // The timing of the run is not part of what it did.
    let m = v.as_object_mut().unwrap();
    m.remove("elapsed_seconds");
    m.remove("packets_per_second");
    v
}

fn frames(path: &Path) -> Vec<(u64, Vec<u8>)> {
    pcap::read_all(std::fs::File::open(path).unwrap()).unwrap()
}

/// `capinfos`' packet count and file type.
fn capinfos(path: &Path) -> (u64, String) {
    let text = tool("capinfos", &["-c", "-t", "-M", path.to_str().unwrap()]);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("capinfos printed no {name}: {text}"))
    };
    (
        field("Number of packets:").parse().unwrap(),
        field("File type:"),
    )
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn editcap_pcapng_replays_as_the_pcap_does_at_either_resolution() {
    let dir = scratch("captures-editcap");
    let config = examples().join("sluice.toml");
    let sample = examples().join("sample.pcap");
    // Microseconds: the sample as Wireshark would save it.
    let ng = dir.join("sample.pcapng");
    tool(
        "editcap",
        &[
            "-F",
            "pcapng",
            sample.to_str().unwrap(),
            ng.to_str().unwrap(),
        ],
    );
    assert_eq!(capinfos(&ng).1, "pcapng");
    let a = replay(&config, &sample, &dir.join("a.pcap"), "pcap");
    let b = replay(&config, &ng, &dir.join("b.pcap"), "pcap");
    assert_eq!(a, b, "the stats differ between the pcap and the pcapng");
    assert_eq!(frames(&dir.join("a.pcap")), frames(&dir.join("b.pcap")));
    assert!(a["packets_out"].as_u64().unwrap() > 1000, "{a}");

    // Nanoseconds: odd nanoseconds on every frame must survive editcap and our reader.
    let original = frames(&sample);
    let ns: Vec<(u64, Vec<u8>)> = original
        .iter()
        .enumerate()
        .map(|(i, (t, f))| (t + 1 + i as u64 % 997, f.clone()))
        .collect();
    let ns_pcap = dir.join("ns.pcap");
    let mut w = pcap::PcapWriter::new(std::fs::File::create(&ns_pcap).unwrap(), true).unwrap();
    for (t, f) in &ns {
        w.write(*t, f).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let ns_ng = dir.join("ns.pcapng");
    tool(
        "editcap",
        &[
            "-F",
            "pcapng",
            ns_pcap.to_str().unwrap(),
            ns_ng.to_str().unwrap(),
        ],
    );
    assert_eq!(frames(&ns_ng), ns, "nanosecond timestamps lost on the way");
    let c = replay(&config, &ns_pcap, &dir.join("c.pcap"), "pcap");
    let d = replay(&config, &ns_ng, &dir.join("d.pcap"), "pcap");
    assert_eq!(c, d);
    let (c, d) = (frames(&dir.join("c.pcap")), frames(&dir.join("d.pcap")));
    assert_eq!(c, d);
    assert!(
        c.iter().any(|(t, _)| t % 1000 != 0),
        "the output lost the nanoseconds"
    );
}

#[test]
fn output_in_pcapng_is_read_back_by_wiresharks_tools() {
    let dir = scratch("captures-output");
    let config = examples().join("sluice.toml");
    let sample = examples().join("sample.pcap");
    let st = replay(&config, &sample, &dir.join("out.pcap"), "pcap");
    let ng = dir.join("out.pcapng");
    replay(&config, &sample, &ng, "pcapng");
    let (count, kind) = capinfos(&ng);
    assert_eq!(kind, "pcapng");
    assert_eq!(count, st["packets_out"].as_u64().unwrap());
    // Wireshark's conversion back to pcap gives the frames the pcap output has.
    let back = dir.join("back.pcap");
    tool(
        "editcap",
        &["-F", "pcap", ng.to_str().unwrap(), back.to_str().unwrap()],
    );
    let strip_ns = |v: Vec<(u64, Vec<u8>)>| -> Vec<(u64, Vec<u8>)> {
        v.into_iter().map(|(t, f)| (t / 1000, f)).collect()
    };
    assert_eq!(
        strip_ns(frames(&back)),
        strip_ns(frames(&dir.join("out.pcap")))
    );
    // And our reader takes our own pcapng output.
    assert_eq!(frames(&ng), frames(&dir.join("out.pcap")));
}

/// A namespace with two veth pairs whose far ends send, for dumpcap to capture on both.
struct Veths(&'static str);

impl Drop for Veths {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).status();
    }
}

#[test]
fn a_live_two_interface_dumpcap_capture_replays_every_packet() {
    let ns = Veths("sluice-cap");
    let _ = Command::new("ip")
        .args(["netns", "del", ns.0])
        .stderr(std::process::Stdio::null())
        .status();
    let sh = |cmd: &str| {
        let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(&format!(
        "ip netns add {n} && ip -n {n} link set lo up \
         && ip -n {n} link add cap0 type veth peer name far0 \
         && ip -n {n} link add cap1 type veth peer name far1 \
         && for i in cap0 far0 cap1 far1; do ip -n {n} link set $i up; done \
         && ip -n {n} addr add 198.51.100.1/24 dev far0 \
         && ip -n {n} addr add 203.0.113.1/24 dev far1",
        n = ns.0
    ));
    let dir = scratch("captures-dumpcap");
    let ng = dir.join("live.pcapng");
    // dumpcap on both interfaces while the far ends send: UDP to the sample's VIP through
    // one, pings (ARP first) through the other.
    let mut cap = Command::new("ip")
        .args(["netns", "exec", ns.0, "dumpcap", "-i", "cap0", "-i", "cap1"])
        .args(["-a", "duration:4", "-w", ng.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Traffic only once dumpcap says it is capturing on both (it can take a while to start
    // on a loaded machine).
    let mut err = std::io::BufReader::new(cap.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        use std::io::BufRead;
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("dumpcap ended before capturing: {said}");
        }
        said += &line;
        if line.contains("Capturing on") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    std::thread::sleep(std::time::Duration::from_millis(200));
    sh(&format!(
        "ip netns exec {n} sh -c 'ip neigh replace 198.51.100.10 lladdr 02:00:00:00:00:01 dev far0 nud permanent; \
         for i in $(seq 1 20); do echo x > /dev/udp/198.51.100.10/53 2>/dev/null || true; done; \
         ping -c 3 -i 0.2 -W 0.2 203.0.113.9 >/dev/null 2>&1 || true'",
        n = ns.0
    ));
    assert!(cap.wait().unwrap().success(), "dumpcap failed");
    let (count, kind) = capinfos(&ng);
    assert_eq!(kind, "pcapng");
    assert!(
        count >= 20,
        "dumpcap captured only {count} packets ({said})"
    );
    let config = examples().join("sluice.toml");
    let st = replay(&config, &ng, &dir.join("out.pcap"), "pcap");
    assert_eq!(
        st["packets_in"].as_u64(),
        Some(count),
        "every captured packet is replayed: {st}"
    );
    // The same capture as Wireshark converts it to pcap gives the same result.
    let flat = dir.join("live.pcap");
    tool(
        "editcap",
        &["-F", "pcap", ng.to_str().unwrap(), flat.to_str().unwrap()],
    );
    let st2 = replay(&config, &flat, &dir.join("flat.pcap"), "pcap");
    assert_eq!(st["drops"], st2["drops"]);
    assert_eq!(st["packets_out"], st2["packets_out"]);
    let strip_ns = |v: Vec<(u64, Vec<u8>)>| -> Vec<(u64, Vec<u8>)> {
        v.into_iter().map(|(t, f)| (t / 1000, f)).collect()
    };
    assert_eq!(
        strip_ns(frames(&dir.join("out.pcap"))),
        strip_ns(frames(&dir.join("flat.pcap")))
    );
}
