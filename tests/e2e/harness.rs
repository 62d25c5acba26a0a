//! What the end-to-end tests share: the namespace topology (tests/e2e/topology.sh), sluice
//! running in it, and its configuration for each driver.
#![allow(dead_code)]

use super::common::{output_within, sluicectl};
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/topology.sh");
pub const VIP: &str = "10.99.0.100";

/// The longest any one client command of a test may take (the longest, 400 curl requests on
/// a loaded machine, take well under a minute).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// The namespaces of one test; torn down on drop, whatever happened.
pub struct Topology {
    pub pfx: String,
    pub dir: PathBuf,
}

impl Topology {
    pub fn up(pfx: &str, backends: usize, mode: &str) -> Topology {
        Topology::up_with_queues(pfx, backends, mode, 1)
    }

    /// With `queues` queues each way on sluice's interface.
    pub fn up_with_queues(pfx: &str, backends: usize, mode: &str, queues: usize) -> Topology {
        Topology::up_with(pfx, backends, mode, queues, None)
    }

    /// With `queues` queues, and (with `vlan`) every host on that 802.1Q VLAN of the segment.
    pub fn up_with(
        pfx: &str,
        backends: usize,
        mode: &str,
        queues: usize,
        vlan: Option<u16>,
    ) -> Topology {
        let dir = std::env::temp_dir().join(format!("sluice-e2e-{pfx}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = Topology {
            pfx: pfx.into(),
            dir,
        };
        let mut c = Command::new("bash");
        if let Some(v) = vlan {
            c.env("VLAN", v.to_string());
        }
        let o = c
            .args([
                TOPOLOGY,
                "up",
                pfx,
                &backends.to_string(),
                t.dir.to_str().unwrap(),
                mode,
                &queues.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "topology: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    /// Runs a command in namespace `PFX-name`, for at most [`COMMAND_LIMIT`].
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{ns}", self.pfx)])
            .args(args);
        output_within(c, COMMAND_LIMIT)
    }

    pub fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}-{ns}", self.pfx)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([TOPOLOGY, "down", &self.pfx])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// sluice running in the `lb` namespace; stopped on drop.
pub struct Balancer {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Balancer {
    pub fn start(t: &Topology, config: &str) -> Balancer {
        sluicectl();
        let socket = t.dir.join("control.sock");
        let path = t.dir.join("sluice.toml");
        std::fs::write(
            &path,
            format!(
                "{config}\n[control]\nsocket = \"{}\"\ndrain_timeout = 60\n",
                socket.display()
            ),
        )
        .unwrap();
        let child = t.spawn(
            "lb",
            &[
                env!("CARGO_BIN_EXE_sluice"),
                "run",
                "--config",
                path.to_str().unwrap(),
            ],
        );
        let b = Balancer {
            child: Some(child),
            socket,
            config: path,
        };
        let start = Instant::now();
        while UnixStream::connect(&b.socket).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "sluice did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn ctl(&self, args: &[&str]) -> Value {
        let mut c = Command::new(sluicectl());
        c.arg("--socket").arg(&self.socket).arg("--json").args(args);
        let o = output_within(c, Duration::from_secs(60));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["ok"], true, "{args:?}: {v}");
        v["result"].clone()
    }

    /// Stops sluice with SIGINT and waits for it to exit: at most its drain timeout (60 s) and
    /// half a minute more, after which it is killed and the test fails.
    pub fn stop(mut self) -> Output {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while c.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(90) {
                let _ = c.kill();
                let o = c.wait_with_output().unwrap();
                panic!(
                    "sluice did not exit within 90 s of SIGINT: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.wait_with_output().unwrap()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last core: the worker's (core 0 keeps the control thread and the test's processes).
pub fn worker_core() -> usize {
    core_affinity::get_core_ids().map_or(0, |c| c.len().saturating_sub(1))
}

/// No MACs anywhere: sluice resolves the backends and the gateway (here the client itself,
/// which is on the same link) by ARP.
pub const NODE: &str =
    "[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"10.99.0.1\"\nipv6 = \"fd99::1\"\ngateway = \"10.98.0.2\"\n";
/// The IPv6 VIP, as a URL host.
pub const VIP6: &str = "[fd99::100]";

/// sluice's configuration for `driver`: "dpdk" (net_af_packet on the veth), "xdp" (AF_XDP
/// on the veth), or "auto" given a DPDK device that does not exist, so it falls back.
pub fn driver_config(driver: &str, services: &str) -> String {
    let core = worker_core();
    let dpdk = |vdev: &str| {
        format!("[dataplane.dpdk]\neal_args = [\"--in-memory\", \"--no-pci\", \"--log-level=lib.eal:error\"{vdev}]\nport = \"net_af_packet0\"\nmbufs = 8191\n")
    };
    let xdp = "[dataplane.xdp]\ninterface = \"eth0\"\n";
    let dp = match driver {
        "dpdk" => dpdk(", \"--vdev\", \"net_af_packet0,iface=eth0\""),
        "xdp" => xdp.to_string(),
        _ => dpdk("") + xdp,
    };
    format!("{NODE}[dataplane]\ndriver = \"{driver}\"\ncores = [{core}]\n{dp}{services}")
}

pub fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}
