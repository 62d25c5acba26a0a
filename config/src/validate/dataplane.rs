//! `[dataplane]` and its driver sections: read from the file ([`parse_dataplane`]), then
//! checked on the model ([`check_dataplane`]).

use crate::error::{invalid, Ctx, Invalid, Spans};
use crate::model::*;
use crate::raw::*;
use crate::ConfigError;
use toml::Spanned;

/// The setting of `key` named by `v` among `all` (by name); the first, "auto", when absent.
fn pick<T: Copy>(
    ctx: &Ctx,
    v: &Option<Spanned<String>>,
    key: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, ConfigError> {
    pick_at(ctx, v, &format!("dataplane.xdp.{key}"), key, all, name)
}

fn pick_at<T: Copy>(
    ctx: &Ctx,
    v: &Option<Spanned<String>>,
    full_key: &str,
    key: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, ConfigError> {
    let Some(m) = v else {
        return Ok(all[0]);
    };
    match all.iter().find(|t| name(**t) == m.get_ref().as_str()) {
        Some(t) => Ok(*t),
        None => ctx.err(
            m.span(),
            full_key,
            format!("`{}` is not a {key} setting", m.get_ref()),
            format!(
                "use one of: {}",
                all.iter().map(|t| name(*t)).collect::<Vec<_>>().join(", ")
            ),
        ),
    }
}

/// Reads `[dataplane]`, recording where its keys are.
pub(crate) fn parse_dataplane(
    ctx: &Ctx,
    d: &Spanned<RawDataplane>,
    spans: &mut Spans,
) -> Result<Dataplane, ConfigError> {
    let r = d.get_ref();
    spans.put("dataplane", d.span());
    spans.put("dataplane.driver", r.driver.span());
    spans.put("dataplane.cores", r.cores.span());
    let mut put = |key: &str, span: Option<std::ops::Range<usize>>| {
        if let Some(s) = span {
            spans.put(key, s);
        }
    };
    let pcap = r.pcap.as_ref().map(|x| {
        let x = x.get_ref();
        put("dataplane.pcap.input", Some(x.input.span()));
        put("dataplane.pcap.output", Some(x.output.span()));
        put("dataplane.pcap.speed", x.speed.as_ref().map(|v| v.span()));
        PcapDriver {
            input: x.input.get_ref().into(),
            output: x.output.get_ref().into(),
            speed: x.speed.as_ref().map_or(1, |v| *v.get_ref()),
        }
    });
    let xdp = match &r.xdp {
        Some(x) => {
            let x = x.get_ref();
            put("dataplane.xdp.interface", Some(x.interface.span()));
            put("dataplane.xdp.frames", x.frames.as_ref().map(|v| v.span()));
            put("dataplane.xdp.ring", x.ring.as_ref().map(|v| v.span()));
            Some(XdpDriver {
                interface: x.interface.get_ref().clone(),
                mode: pick(ctx, &x.mode, "mode", &XdpMode::ALL, XdpMode::name)?,
                zerocopy: pick(ctx, &x.zerocopy, "zerocopy", &ZeroCopy::ALL, ZeroCopy::name)?,
                frames: x.frames.as_ref().map_or(8192, |v| *v.get_ref()),
                ring: x.ring.as_ref().map_or(2048, |v| *v.get_ref()),
            })
        }
        None => None,
    };
    let dpdk = r.dpdk.as_ref().map(|x| {
        let x = x.get_ref();
        put("dataplane.dpdk.port", Some(x.port.span()));
        put("dataplane.dpdk.mbufs", x.mbufs.as_ref().map(|v| v.span()));
        put(
            "dataplane.dpdk.rx_descriptors",
            x.rx_descriptors.as_ref().map(|v| v.span()),
        );
        put(
            "dataplane.dpdk.tx_descriptors",
            x.tx_descriptors.as_ref().map(|v| v.span()),
        );
        put(
            "dataplane.dpdk.tx_port",
            x.tx_port.as_ref().map(|v| v.span()),
        );
        put(
            "dataplane.dpdk.exception_interface",
            x.exception_interface.as_ref().map(|v| v.span()),
        );
        Dpdk {
            eal_args: x.eal_args.clone(),
            port: x.port.get_ref().clone(),
            tx_port: x.tx_port.as_ref().map(|t| t.get_ref().clone()),
            exception_interface: x.exception_interface.as_ref().map(|t| t.get_ref().clone()),
            mbufs: x.mbufs.as_ref().map_or(16383, |v| *v.get_ref()),
            rx_descriptors: x.rx_descriptors.as_ref().map_or(1024, |v| *v.get_ref()),
            tx_descriptors: x.tx_descriptors.as_ref().map_or(1024, |v| *v.get_ref()),
        }
    });
    Ok(Dataplane {
        driver: *r.driver.get_ref(),
        cores: r.cores.get_ref().clone(),
        idle: pick_at(
            ctx,
            &r.idle,
            "dataplane.idle",
            "idle",
            &IdlePolicy::ALL,
            IdlePolicy::name,
        )?,
        dpdk,
        pcap,
        xdp,
    })
}

/// A Linux interface name: 1 to 15 bytes, no slash, no white space.
fn interface_name_ok(i: &str) -> bool {
    !(i.is_empty() || i.len() > 15 || i.contains('/') || i.chars().any(|c| c.is_whitespace()))
}

/// The rules `[dataplane]` must follow.
pub(crate) fn check_dataplane(d: &Dataplane) -> Result<(), Invalid> {
    let cores = &d.cores;
    if cores.is_empty() || cores.len() > 64 {
        return invalid(
            "dataplane.cores",
            format!("{} worker cores given", cores.len()),
            "list 1 to 64 CPU core numbers, one worker each, such as [1, 2]",
        );
    }
    for (i, c) in cores.iter().enumerate() {
        if cores[..i].contains(c) {
            return invalid(
                "dataplane.cores",
                format!("core {c} is listed twice"),
                "list each core once: every worker owns its core",
            );
        }
    }
    match (&d.pcap, d.driver) {
        (None, Driver::Pcap) => {
            return invalid(
                "dataplane.driver",
                "driver \"pcap\" needs a [dataplane.pcap] section",
                "add [dataplane.pcap] with `input` (a capture to play) and `output` (where to write what is sent)",
            )
        }
        (Some(x), _) => {
            for (v, k) in [(&x.input, "input"), (&x.output, "output")] {
                if v.to_string_lossy().trim().is_empty() {
                    return invalid(format!("dataplane.pcap.{k}"), "the path is empty", "give a capture file path");
                }
            }
            if x.speed == 0 || x.speed > 1000 {
                return invalid("dataplane.pcap.speed", format!("speed {} is out of range", x.speed), "give 1 (real time) to 1000");
            }
        }
        (None, _) => {}
    }
    if d.driver == Driver::Pcap && cores.len() != 1 {
        return invalid(
            "dataplane.cores",
            format!(
                "driver \"pcap\" plays one capture on one worker, and {} cores are listed",
                cores.len()
            ),
            "list exactly one core, such as [0]",
        );
    }
    match (&d.xdp, d.driver) {
        (None, drv @ (Driver::Xdp | Driver::Auto)) => {
            return invalid(
                "dataplane.driver",
                format!("driver \"{}\" needs a [dataplane.xdp] section", drv.name()),
                "add [dataplane.xdp] with `interface`, the Linux interface to balance on",
            )
        }
        (Some(x), _) => {
            if !interface_name_ok(&x.interface) {
                return invalid(
                    "dataplane.xdp.interface",
                    format!("`{}` is not an interface name", x.interface),
                    "give the Linux interface name, such as \"eth0\" (see `ip link`)",
                );
            }
            if x.frames < 1024 || x.frames > 1 << 20 {
                return invalid(
                    "dataplane.xdp.frames",
                    format!("{} UMEM frames is out of range", x.frames),
                    "give 1024 to 1048576 frames per queue (4 KiB each)",
                );
            }
            if x.ring < 64 || x.ring > 16384 || !x.ring.is_power_of_two() || x.ring * 2 > x.frames {
                return invalid(
                    "dataplane.xdp.ring",
                    format!("{} ring entries is not usable", x.ring),
                    "give a power of two from 64 to 16384, at most half the frames",
                );
            }
        }
        (None, _) => {}
    }
    match (&d.dpdk, d.driver) {
        (None, Driver::Dpdk | Driver::Auto) => {
            return invalid(
                "dataplane.driver",
                "drivers \"dpdk\" and \"auto\" need a [dataplane.dpdk] section",
                "add [dataplane.dpdk] with at least `port`, the ethdev name or PCI address",
            )
        }
        (Some(x), _) => {
            if x.port.trim().is_empty() {
                return invalid("dataplane.dpdk.port", "the port name is empty", "give the ethdev name (like \"net_pcap0\") or PCI address (like \"0000:3b:00.1\")");
            }
            if x.mbufs < 1023 {
                return invalid(
                    "dataplane.dpdk.mbufs",
                    format!("{} packet buffers is too few", x.mbufs),
                    "give at least 1023; descriptors of every queue plus bursts in flight must fit",
                );
            }
            for (key, n) in [
                ("rx_descriptors", x.rx_descriptors),
                ("tx_descriptors", x.tx_descriptors),
            ] {
                if n < 64 || !n.is_power_of_two() {
                    return invalid(
                        format!("dataplane.dpdk.{key}"),
                        format!("{n} descriptors is not usable"),
                        "give a power of two from 64 to 32768, such as 1024",
                    );
                }
            }
            if let Some(t) = &x.tx_port {
                if t.trim().is_empty() || *t == x.port {
                    return invalid(
                        "dataplane.dpdk.tx_port",
                        format!("`{t}` is not a second port"),
                        "name another ethdev to transmit on, or leave tx_port out to transmit on `port`",
                    );
                }
            }
            if let Some(e) = &x.exception_interface {
                if !interface_name_ok(e) {
                    return invalid("dataplane.dpdk.exception_interface", format!("`{e}` is not a usable interface name"), "give a name of 1 to 15 characters for the TAP interface, such as \"sluice0\"");
                }
            }
        }
        (None, _) => {}
    }
    Ok(())
}
