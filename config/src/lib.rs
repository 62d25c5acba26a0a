//! The sluice configuration: the TOML schema (serde), defaults, and validation whose errors
//! name the file, line and key, say what is wrong and how to fix it. A [`Config`] that
//! [`Config::from_toml`] returns is valid: the data path never re-checks it.

mod error;
mod model;
mod raw;
mod validate;
mod write;

pub use error::ConfigError;
pub use model::*;

use error::Ctx;
use error::Spans;
use raw::RawConfig;
use std::path::Path;
use validate::conntrack::{check_conntrack, parse_conntrack};
use validate::control::{check_control, parse_control};
use validate::dataplane::{check_dataplane, parse_dataplane};
use validate::node::{check_node, parse_node};
use validate::service::{check_services, parse_service};

/// Table sizes are validated with Maglev's own prime helpers.
pub use maglev::{is_prime, next_prime};
pub use validate::l7::parse_hash_on;
/// Seconds since 1970 as `YYYY-MM-DD` (certificate expiry dates).
pub use validate::x509::date;

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(name.clone()),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
            fix: "check the path given to --config and that the file is readable".into(),
        })?;
        Config::from_toml(&src, Some(&name))
    }

    /// Checks the model against every rule a file is held to — `[node]`, `[conntrack]`,
    /// `[control]`, `[dataplane]`, and every service, backend and health check — with the
    /// same code `from_toml` runs after reading a file, so a control request and a file meet
    /// the same rules. The error names the key; it has no line, as the change came from no
    /// file. (What only a file can get wrong — syntax, unknown keys, text that is not an
    /// address — is caught as it is read.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_node(&self.node)?;
        check_conntrack(&self.conntrack)?;
        check_control(&self.control)?;
        if let Some(d) = &self.dataplane {
            check_dataplane(d)?;
        }
        check_services(&self.services, &self.node)?;
        validate::l7::check_l7_workers(&self.l7, &self.node, &self.services)?;
        if let Some(b) = &self.bgp {
            validate::bgp::check_bgp(b)?;
        }
        Ok(())
    }

    /// Parses and validates TOML text. `file` names the source in errors.
    pub fn from_toml(src: &str, file: Option<&str>) -> Result<Config, ConfigError> {
        let ctx = Ctx { src, file };
        let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigError {
            file: file.map(str::to_owned),
            line: e.span().map(|s| ctx.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
            fix: "see the configuration reference in README.md".into(),
        })?;
        let mut spans = Spans::default();
        // Errors about the services as a whole point at the start of the file.
        spans.put("service", 0..0);
        let node = parse_node(&ctx, raw.node.get_ref(), &mut spans)?;
        check_node(&node).map_err(|e| ctx.locate(e, &spans))?;
        let conntrack = match &raw.conntrack {
            Some(c) => parse_conntrack(c.get_ref(), &mut spans),
            None => Conntrack::default(),
        };
        check_conntrack(&conntrack).map_err(|e| ctx.locate(e, &spans))?;
        let services = raw
            .service
            .iter()
            .enumerate()
            .map(|(i, s)| parse_service(&ctx, i, s, &mut spans))
            .collect::<Result<Vec<Service>, ConfigError>>()?;
        check_services(&services, &node).map_err(|e| ctx.locate(e, &spans))?;
        let dataplane = match &raw.dataplane {
            Some(d) => Some(parse_dataplane(&ctx, d, &mut spans)?),
            None => None,
        };
        if let Some(d) = &dataplane {
            check_dataplane(d).map_err(|e| ctx.locate(e, &spans))?;
        }
        let control = match &raw.control {
            Some(c) => parse_control(c.get_ref(), &mut spans),
            None => Control::default(),
        };
        check_control(&control).map_err(|e| ctx.locate(e, &spans))?;
        let metrics = match &raw.metrics {
            Some(m) => {
                let l = &m.get_ref().listen;
                let listen = l.get_ref().parse().or_else(|_| {
                    ctx.err(
                        l.span(),
                        "metrics.listen",
                        format!("`{}` is not an address with a port", l.get_ref()),
                        "write \"127.0.0.1:9100\" (or leave [metrics] out to serve no metrics)",
                    )
                })?;
                Some(Metrics { listen })
            }
            None => None,
        };
        let l7 = match &raw.l7 {
            Some(w) => validate::l7::parse_l7_workers(&ctx, w.get_ref(), &mut spans)?,
            None => L7Workers::default(),
        };
        validate::l7::check_l7_workers(&l7, &node, &services).map_err(|e| ctx.locate(e, &spans))?;
        let bgp = match &raw.bgp {
            Some(b) => Some(validate::bgp::parse_bgp(&ctx, b.get_ref(), &mut spans)?),
            None => None,
        };
        if let Some(b) = &bgp {
            validate::bgp::check_bgp(b).map_err(|e| ctx.locate(e, &spans))?;
        }
        Ok(Config {
            node,
            conntrack,
            services,
            dataplane,
            control,
            metrics,
            l7,
            bgp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
ipv6 = "2001:db8::1"
gateway_mac = "02:00:00:00:00:fe"

[[service]]
name = "web"
vip = "198.51.100.10:80"
protocol = "tcp"
forwarding = "nat"
table_size = 65537

[[service.backend]]
address = "10.1.0.1:8080"
mac = "02:00:00:00:01:01"
weight = 1

[[service.backend]]
address = "10.1.0.2:8080"
mac = "02:00:00:00:01:02"
weight = 3

[[service]]
name = "web6"
vip = "[2001:db8:100::10]:80"
protocol = "tcp"
forwarding = "dsr"

[[service.backend]]
address = "[2001:db8:1::1]:80"
mac = "02:00:00:00:01:01"
"#;

    fn err(src: &str) -> ConfigError {
        Config::from_toml(src, Some("t.toml")).unwrap_err()
    }

    /// `mac` may be left out (sluice resolves the next hop), given the node's address of the
    /// family to ask from; the gateway likewise by address.
    #[test]
    fn next_hops_without_mac_need_the_nodes_address() {
        let no_mac = GOOD.replace("mac = \"02:00:00:00:01:01\"\n", "").replace(
            "gateway_mac = \"02:00:00:00:00:fe\"",
            "gateway = \"2001:db8::fe\"",
        );
        let c = Config::from_toml(&no_mac, None).unwrap();
        assert_eq!(c.services[0].backends[0].mac, None);
        assert_eq!(c.services[1].backends[0].mac, None);
        assert!(c.services[0].backends[1].mac.is_some());
        assert_eq!(c.node.gateway, Some("2001:db8::fe".parse().unwrap()));
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        let e = err(&no_mac.replace("ipv6 = \"2001:db8::1\"\n", ""));
        assert!(
            e.key.ends_with("node.gateway") && e.fix.contains("node.ipv6"),
            "{e}"
        );
        let e = err(&no_mac.replace("ipv6 = \"2001:db8::1\"\n", "").replace(
            "gateway = \"2001:db8::fe\"",
            "gateway_mac = \"02:00:00:00:00:fe\"",
        ));
        assert!(
            e.key.starts_with("service[1]") && e.key.ends_with("backend[0].mac"),
            "{e}"
        );
        assert!(
            e.message.contains("[2001:db8:1::1]:80") && e.fix.contains("node.ipv6"),
            "{e}"
        );
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::from_toml(GOOD, None).unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].backends[1].weight, 3);
        assert_eq!(c.services[1].table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(c.services[1].backends[0].weight, 1);
        assert_eq!(c.conntrack, Conntrack::default());
        assert_eq!(c.node.snat_ports, (1024, 32767));
    }

    #[test]
    fn non_prime_table_size_names_key_line_and_fix() {
        let e = err(&GOOD.replace("table_size = 65537", "table_size = 65536"));
        assert_eq!(e.line, Some(13));
        assert_eq!(e.key, "service[0] (\"web\").table_size");
        assert!(e.to_string().contains("65537"), "{e}");
        assert!(e.to_string().starts_with("t.toml:13: "), "{e}");
    }

    #[test]
    fn large_primes_are_accepted() {
        let c = Config::from_toml(
            &GOOD.replace("table_size = 65537", "table_size = 655373"),
            None,
        )
        .unwrap();
        assert_eq!(c.services[0].table_size, 655373);
    }

    #[test]
    fn each_bad_value_is_reported_at_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("weight = 3", "weight = 0", "backend[1].weight"),
            (
                "\"10.1.0.2:8080\"",
                "\"10.1.0.1:8080\"",
                "backend[1].address",
            ),
            (
                "\"10.1.0.2:8080\"",
                "\"[2001:db8::5]:8080\"",
                "backend[1].address",
            ),
            (
                "\"02:00:00:00:01:02\"",
                "\"02:00:00:01:02\"",
                "backend[1].mac",
            ),
            (
                "vip = \"198.51.100.10:80\"",
                "vip = \"198.51.100.10\"",
                "vip",
            ),
            (
                "\"[2001:db8:1::1]:80\"",
                "\"[2001:db8:1::1]:8080\"",
                "backend[0].address",
            ),
            ("name = \"web6\"", "name = \"web\"", "service[1].name"),
            (
                "gateway_mac = \"02:00:00:00:00:fe\"",
                "gateway_mac = \"nope\"",
                "node.gateway_mac",
            ),
            // No next hop for replies at all.
            ("gateway_mac = \"02:00:00:00:00:fe\"", "", "node.gateway"),
            (
                "gateway_mac = \"02:00:00:00:00:fe\"",
                "gateway = \"router\"",
                "node.gateway",
            ),
        ];
        for (from, to, key) in cases {
            let e = err(&GOOD.replacen(from, to, 1));
            assert!(e.key.ends_with(key), "{from} -> {to}: key {} in {e}", e.key);
            assert!(e.line.is_some() && !e.fix.is_empty(), "{e}");
        }
    }

    #[test]
    fn syntax_unknown_keys_and_enums_report_lines() {
        let e = err(&GOOD.replace("table_size = 65537", "tabel_size = 65537"));
        assert_eq!(e.line, Some(13));
        assert!(e.message.contains("tabel_size"), "{e}");
        let e = err(&GOOD.replace("forwarding = \"nat\"", "forwarding = \"tunnel\""));
        assert!(
            e.message.contains("tunnel") && e.message.contains("snat"),
            "{e}"
        );
        assert_eq!(e.line, Some(12));
        let e = err("[node\nmac=1");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn snat_without_node_address_is_refused() {
        let src = GOOD
            .replace("ipv4 = \"192.0.2.1\"\n", "")
            .replace("forwarding = \"nat\"", "forwarding = \"snat\"");
        let e = err(&src);
        assert!(
            e.message.contains("node.ipv4") && e.fix.contains("node.ipv4"),
            "{e}"
        );
    }

    #[test]
    fn service_without_backends_and_too_small_table() {
        let e = err(&GOOD[..GOOD.find("[[service.backend]]").unwrap()]);
        assert!(e.message.contains("no backends"), "{e}");
        let e = err(&GOOD.replace("table_size = 65537", "table_size = 101"));
        assert!(e.message.contains("too small"), "{e}");
    }

    #[test]
    fn the_tunnel_mtu_is_read_and_an_impossible_one_named() {
        let with = |v: &str| GOOD.replacen("[node]\n", &format!("[node]\ntunnel_mtu = {v}\n"), 1);
        let c = Config::from_toml(&with("1500"), None).unwrap();
        assert_eq!(c.node.tunnel_mtu, Some(1500));
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        assert_eq!(Config::from_toml(GOOD, None).unwrap().node.tunnel_mtu, None);
        let e = err(&with("1000"));
        assert_eq!(e.key, "node.tunnel_mtu", "{e}");
        assert!(e.fix.contains("1280"), "{e}");
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn the_idle_policy_defaults_to_sleep_and_names_a_bad_value() {
        let dp =
            "\n[dataplane]\ndriver = \"xdp\"\ncores = [0]\n[dataplane.xdp]\ninterface = \"eth0\"\n";
        let c = Config::from_toml(&format!("{GOOD}{dp}"), None).unwrap();
        assert_eq!(c.dataplane.unwrap().idle, IdlePolicy::Sleep);
        let y = dp.replace("cores = [0]\n", "cores = [0]\nidle = \"yield\"\n");
        let c = Config::from_toml(&format!("{GOOD}{y}"), None).unwrap();
        assert_eq!(c.dataplane.as_ref().unwrap().idle, IdlePolicy::Yield);
        let spin = dp.replace("cores = [0]\n", "cores = [0]\nidle = \"spin\"\n");
        let c = Config::from_toml(&format!("{GOOD}{spin}"), None).unwrap();
        assert_eq!(c.dataplane.as_ref().unwrap().idle, IdlePolicy::Spin);
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        let e = err(&format!(
            "{GOOD}{}",
            dp.replace("cores = [0]\n", "cores = [0]\nidle = \"nap\"\n")
        ));
        assert_eq!(e.key, "dataplane.idle");
        assert!(e.fix.contains("yield, spin") && e.line.is_some(), "{e}");
    }

    #[test]
    fn dataplane_section() {
        let dp = "\n[dataplane]\ndriver = \"dpdk\"\ncores = [1, 2]\n[dataplane.dpdk]\neal_args = [\"--in-memory\"]\nport = \"net_null0\"\n";
        let c = Config::from_toml(&format!("{GOOD}{dp}"), None).unwrap();
        let d = c.dataplane.unwrap();
        assert_eq!(
            (
                d.cores,
                d.dpdk.as_ref().unwrap().mbufs,
                d.dpdk.unwrap().rx_descriptors
            ),
            (vec![1, 2], 16383, 1024)
        );
        assert!(Config::from_toml(GOOD, None).unwrap().dataplane.is_none());
        let e = err(&format!("{GOOD}{}", dp.replace("[1, 2]", "[1, 1]")));
        assert!(
            e.key == "dataplane.cores" && e.message.contains("twice"),
            "{e}"
        );
        let e = err(&format!(
            "{GOOD}{}",
            dp.replace(
                "port = \"net_null0\"",
                "port = \"net_null0\"\nrx_descriptors = 1000"
            )
        ));
        assert!(e.key.ends_with("rx_descriptors"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[dataplane]\ndriver = \"dpdk\"\ncores = [1]\n"
        ));
        assert!(e.message.contains("[dataplane.dpdk]"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[dataplane]\ndriver = \"netmap\"\ncores = [1]\n"
        ));
        assert!(
            e.message.contains("netmap") && e.message.contains("dpdk"),
            "{e}"
        );
    }

    #[test]
    fn to_toml_reads_back_equal() {
        let src = format!("{GOOD}\n[control]\nsocket = \"/tmp/x.sock\"\ndrain_timeout = 5\ngroup = \"adm\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n[dataplane]\ndriver = \"pcap\"\ncores = [0]\n[dataplane.pcap]\ninput = \"in \\\"q\\\".pcap\"\noutput = \"o.pcap\"\n[dataplane.xdp]\ninterface = \"eth0\"\nmode = \"generic\"\n");
        let mut c = Config::from_toml(&src, None).unwrap();
        c.services[0].health = Some(HealthCheck {
            kind: CheckKind::Http {
                path: "/h".into(),
                status: vec![(200, 299), (404, 404)],
                body: Some("o\"k".into()),
                host: Some("a.example".into()),
            },
            interval_ms: 1500,
            timeout_ms: 250,
            rise: 3,
            fall: 4,
            jitter_ms: 100,
            port: Some(9000),
        });
        c.services[1].health = Some(HealthCheck {
            kind: CheckKind::Tcp,
            interval_ms: 50,
            timeout_ms: 10,
            rise: 1,
            fall: 1,
            jitter_ms: 0,
            port: None,
        });
        c.services[1].all_down = AllDown::All;
        let text = c.to_toml().unwrap();
        let back = Config::from_toml(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, c);
    }

    #[test]
    fn health_and_control_errors_name_the_key() {
        let svc = GOOD.replace(
            "table_size = 65537\n",
            "table_size = 65537\n[service.health]\nTYPE\n",
        );
        let e = err(&svc.replace("TYPE", "type = \"icmp\""));
        assert_eq!(e.key, "service[0] (\"web\").health.type", "{e}");
        let e = err(&svc.replace("TYPE", "type = \"http\"\nstatus = [\"200-99\"]"));
        assert!(
            e.key.ends_with("health.status") && e.message.contains("200-99"),
            "{e}"
        );
        let e = err(&svc.replace("TYPE", "type = \"tcp\"\npath = \"/x\""));
        assert!(
            e.key.ends_with("health.path") && e.message.contains("http"),
            "{e}"
        );
        let e = err(&svc.replace("TYPE", "type = \"tcp\"\ninterval = 1\ntimeout = 2"));
        assert!(e.key.ends_with("health.timeout"), "{e}");
        let e = err(&svc.replace("TYPE", "type = \"tcp\"\nrise = 0"));
        assert!(e.key.ends_with("health.rise"), "{e}");
        let ok = Config::from_toml(
            &svc.replace("TYPE", "type = \"http\"\nstatus = [\"2xx\", \"301\"]"),
            None,
        )
        .unwrap();
        assert_eq!(
            ok.services[0].health.as_ref().unwrap().kind,
            CheckKind::Http {
                path: "/".into(),
                status: vec![(200, 299), (301, 301)],
                body: None,
                host: None
            }
        );
        let e = err(&format!("{GOOD}\n[control]\nsocket = \"relative.sock\"\n"));
        assert_eq!(e.key, "control.socket", "{e}");
        let e = err(&format!("{GOOD}\n[metrics]\nlisten = \"localhost\"\n"));
        assert_eq!(e.key, "metrics.listen", "{e}");
        let e = err(&format!(
            "{GOOD}\n[dataplane]\ndriver = \"pcap\"\ncores = [0]\n"
        ));
        assert!(e.message.contains("[dataplane.pcap]"), "{e}");
    }

    /// A file and a live change are held to the same rules: a configuration changed in
    /// memory is refused by `validate` with the key a file would name (and no line), and the
    /// same mistake written in a file is refused at its line.
    #[test]
    fn validate_applies_a_files_rules_to_a_changed_model() {
        let good = Config::from_toml(GOOD, None).unwrap();
        assert_eq!(good.validate(), Ok(()));
        type Change = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Change, &str, &str)> = vec![
            (
                Box::new(|c| c.services[0].backends[1].weight = 0),
                "service[0] (\"web\").backend[1].weight",
                "weight 0 is out of range",
            ),
            (
                Box::new(|c| c.services[0].table_size = 65536),
                "service[0] (\"web\").table_size",
                "must be a prime",
            ),
            (
                Box::new(|c| {
                    let dup = c.services[0].backends[0].clone();
                    c.services[0].backends.push(dup)
                }),
                "service[0] (\"web\").backend[2].address",
                "listed twice",
            ),
            (
                Box::new(|c| {
                    let mut other = c.services[0].clone();
                    other.name = "web2".into();
                    c.services.push(other)
                }),
                "service[2].vip",
                "already the VIP",
            ),
            (
                Box::new(|c| {
                    c.services[0].backends[0].address = "[2001:db8::9]:8080".parse().unwrap()
                }),
                "service[0] (\"web\").backend[0].address",
                "IPv6",
            ),
        ];
        let more: Vec<(Change, &str, &str)> = vec![
            (
                Box::new(|c| c.node.snat_ports = (2000, 2010)),
                "node.snat_ports",
                "not a usable port range",
            ),
            (
                Box::new(|c| c.conntrack.udp_timeout = 0),
                "conntrack.udp_timeout",
                "out of range",
            ),
            (
                Box::new(|c| {
                    c.services[0].health = Some(HealthCheck {
                        kind: CheckKind::Tcp,
                        interval_ms: 1000,
                        timeout_ms: 2000,
                        rise: 1,
                        fall: 1,
                        jitter_ms: 0,
                        port: None,
                    })
                }),
                "service[0] (\"web\").health.timeout",
                "longer than the interval",
            ),
            (
                Box::new(|c| {
                    c.dataplane = Some(Dataplane {
                        driver: Driver::Pcap,
                        cores: vec![1, 1],
                        idle: IdlePolicy::Yield,
                        dpdk: None,
                        pcap: None,
                        xdp: None,
                    })
                }),
                "dataplane.cores",
                "listed twice",
            ),
        ];
        for (change, key, needle) in cases.into_iter().chain(more) {
            let mut c = good.clone();
            change(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!((e.key.as_str(), e.line), (key, None), "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
        // The same weight rule, read from a file, names the line of the value.
        let e = err(&GOOD.replace("weight = 3", "weight = 0"));
        assert_eq!(e.key, "service[0] (\"web\").backend[1].weight");
        assert_eq!(
            e.line,
            GOOD.lines().position(|l| l == "weight = 3").map(|l| l + 1)
        );
    }

    /// Every committed example, written by the derived writer, reads back equal (the DPDK
    /// and AF_XDP sections included), and the writer uses the file's own keys.
    #[test]
    fn every_example_round_trips_through_the_derived_writer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let c = Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
                let text = c.to_toml().unwrap();
                let back = Config::from_toml(&text, None).unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(back, c, "{}", p.display());
                n += 1;
            }
        }
        assert!(n >= 2, "examples found: {n}");
        let mut dpdk = Config::from_toml(GOOD, None).unwrap();
        dpdk.dataplane = Some(Dataplane {
            driver: Driver::Dpdk,
            cores: vec![1],
            idle: IdlePolicy::Spin,
            dpdk: Some(Dpdk {
                eal_args: vec!["--vdev".into(), "net_null0".into()],
                port: "net_null0".into(),
                tx_port: Some("net_null1".into()),
                exception_interface: Some("sl0".into()),
                mbufs: 8191,
                rx_descriptors: 1024,
                tx_descriptors: 1024,
            }),
            pcap: None,
            xdp: None,
        });
        let text = dpdk.to_toml().unwrap();
        for key in [
            "[dataplane.dpdk]",
            "exception_interface = ",
            "[[service.backend]]",
            "drain_timeout = ",
        ] {
            assert!(text.contains(key), "{key} in\n{text}");
        }
        assert_eq!(Config::from_toml(&text, None).unwrap(), dpdk);
    }

    /// `[bgp]` has defaults for every key; a bad next hop or grace names its key and line;
    /// the section survives being written out and read back.
    #[test]
    fn bgp_section_defaults_errors_and_round_trip() {
        let plain = Config::from_toml(GOOD, None).unwrap();
        assert_eq!(plain.bgp, None);
        let c = Config::from_toml(&format!("{GOOD}\n[bgp]\n"), None).unwrap();
        assert_eq!(c.bgp, Some(Bgp::default()));
        assert_eq!(c.bgp.unwrap().next_hop.for_family(false), "self");
        let src = format!("{GOOD}\n[bgp]\nnext_hop = \"192.0.2.1\"\nshutdown_grace_ms = 2500\n");
        let c = Config::from_toml(&src, None).unwrap();
        let b = c.bgp.clone().unwrap();
        assert_eq!(b.shutdown_grace_ms, 2500);
        assert_eq!(b.next_hop.for_family(false), "192.0.2.1");
        // An IPv4 next hop does not apply to IPv6 VIPs.
        assert_eq!(b.next_hop.for_family(true), "self");
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        let lines = GOOD.lines().count() + 3;
        let e = err(&format!("{GOOD}\n[bgp]\nnext_hop = \"router\"\n"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("bgp.next_hop", Some(lines)),
            "{e}"
        );
        assert!(
            e.message.contains("router") && e.fix.contains("self"),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[bgp]\nshutdown_grace_ms = 700000\n"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("bgp.shutdown_grace_ms", Some(lines)),
            "{e}"
        );
        let e = err(&format!("{GOOD}\n[bgp]\nnext_hop = \"0.0.0.0\"\n"));
        assert_eq!(e.key, "bgp.next_hop", "{e}");
        let e = err(&format!("{GOOD}\n[bgp]\nhold_time = 9\n"));
        assert!(e.message.contains("hold_time"), "{e}");
    }

    /// Without an L7 service, SNAT may take every port (the pool reserves none): a range up to
    /// 65535 is accepted, as the pps harness uses it.
    #[test]
    fn snat_may_use_every_port_without_an_l7_service() {
        let c = Config::from_toml(
            &GOOD.replacen("[node]\n", "[node]\nsnat_ports = [1024, 65535]\n", 1),
            None,
        )
        .unwrap();
        assert_eq!(c.node.snat_ports, (1024, 65535));
    }

    /// `max_flows` on an L4 backend reads, round-trips, and is refused out of range with its
    /// key and line.
    #[test]
    fn backend_max_flows_reads_and_is_range_checked() {
        let with =
            |v: &str| GOOD.replacen("weight = 3\n", &format!("weight = 3\nmax_flows = {v}\n"), 1);
        let c = Config::from_toml(&with("5000"), None).unwrap();
        assert_eq!(c.services[0].backends[1].max_flows, Some(5000));
        assert_eq!(c.services[0].backends[0].max_flows, None);
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        let e = err(&with("0"));
        assert!(e.key.ends_with("backend[1].max_flows"), "{e}");
        let line = with("0")
            .lines()
            .position(|l| l.starts_with("max_flows"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line), "{e}");
    }

    /// `node.tunnel_fragment` needs `node.tunnel_mtu` (the size to cut to), and round-trips.
    #[test]
    fn tunnel_fragment_needs_the_tunnel_mtu() {
        let with = |keys: &str| GOOD.replacen("[node]\n", &format!("[node]\n{keys}"), 1);
        let e = err(&with("tunnel_fragment = true\n"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("node.tunnel_fragment", Some(3)),
            "{e}"
        );
        assert!(e.fix.contains("tunnel_mtu"), "{e}");
        let c =
            Config::from_toml(&with("tunnel_mtu = 1500\ntunnel_fragment = true\n"), None).unwrap();
        assert!(c.node.tunnel_fragment);
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        assert!(!Config::from_toml(GOOD, None).unwrap().node.tunnel_fragment);
    }

    /// `[service.rate_limit]`: at least one limit, rates and bursts in range, a burst only
    /// with its rate; each refusal names its key and line; a good one round-trips.
    #[test]
    fn rate_limits_are_checked_key_by_key() {
        let with = |keys: &str| {
            GOOD.replacen(
                "table_size = 65537\n",
                &format!("table_size = 65537\n[service.rate_limit]\n{keys}"),
                1,
            )
        };
        for (keys, key, says) in [
            ("", "service[0] (\"web\").rate_limit", "sets no limit"),
            (
                "packets = 0\n",
                "service[0] (\"web\").rate_limit.packets",
                "out of range",
            ),
            (
                "new_flows_per_source = 10\nsource_burst = 0\n",
                "service[0] (\"web\").rate_limit.source_burst",
                "out of range",
            ),
            (
                "packets_burst = 5\nnew_flows_per_source = 1\n",
                "service[0] (\"web\").rate_limit.packets_burst",
                "without its rate",
            ),
        ] {
            let e = err(&with(keys));
            assert_eq!(e.key, key, "{keys:?}: {e}");
            assert!(e.message.contains(says), "{keys:?}: {e}");
            assert!(e.line.is_some(), "{e}");
        }
        let c =
            Config::from_toml(&with("new_flows_per_source = 50\npackets = 10000\n"), None).unwrap();
        let rl = c.services[0].rate_limit.clone().unwrap();
        assert_eq!(
            (rl.new_flows_per_source, rl.packets),
            (Some(50), Some(10_000))
        );
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        assert_eq!(c.conntrack.rate_limit_sources, 65_536);
    }

    /// `syn_proxy` and its keys: a `nat` or `snat` TCP service, the auto thresholds only with
    /// `auto` and in order, an MSS in range; each refusal names its key and line, with a fix;
    /// a good one round-trips.
    #[test]
    fn syn_proxy_keys_are_checked_and_round_trip() {
        let web = |keys: &str| {
            GOOD.replacen(
                "table_size = 65537\n",
                &format!("table_size = 65537\n{keys}"),
                1,
            )
        };
        let key = |k: &str| format!("service[0] (\"web\").{k}");
        for (conf, k, says) in [
            (
                web("syn_proxy = \"maybe\"\n"),
                "service[0].syn_proxy".to_string(),
                "",
            ),
            (
                web("syn_proxy = \"on\"\nsyn_proxy_auto_on = 500\n"),
                key("syn_proxy_auto_on"),
                "applies to syn_proxy = \"auto\"",
            ),
            (
                web("syn_proxy = \"auto\"\nsyn_proxy_auto_on = 500\nsyn_proxy_auto_off = 500\n"),
                key("syn_proxy_auto_off"),
                "must be below",
            ),
            (
                web("syn_proxy = \"auto\"\nsyn_proxy_auto_off = 20000\n"),
                key("syn_proxy_auto_off"),
                "must be below syn_proxy_auto_on (10000)",
            ),
            (
                web("syn_proxy = \"auto\"\nsyn_proxy_auto_on = 0\n"),
                key("syn_proxy_auto_on"),
                "out of range",
            ),
            (
                web("syn_proxy = \"on\"\nsyn_proxy_mss = 100\n"),
                key("syn_proxy_mss"),
                "out of range",
            ),
            (
                web("syn_proxy_mss = 1400\n"),
                key("syn_proxy_mss"),
                "applies to a service with a SYN proxy",
            ),
            (
                GOOD.replacen(
                    "forwarding = \"dsr\"\n",
                    "forwarding = \"dsr\"\nsyn_proxy = \"on\"\n",
                    1,
                ),
                "service[1] (\"web6\").syn_proxy".to_string(),
                "do not pass through sluice",
            ),
        ] {
            let e = err(&conf);
            if says.is_empty() {
                // An unknown mode: the parser names the key's choices.
                assert!(e.to_string().contains("auto"), "{e}");
                assert!(e.line.is_some(), "{e}");
                continue;
            }
            assert_eq!(e.key, k, "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(e.line.is_some(), "{e}");
            assert!(!e.fix.is_empty(), "{e}");
        }
        let c = Config::from_toml(
            &web("syn_proxy = \"auto\"\nsyn_proxy_auto_on = 2000\nsyn_proxy_mss = 1400\n"),
            None,
        )
        .unwrap();
        let s = &c.services[0];
        assert_eq!(
            (
                s.syn_proxy,
                s.syn_proxy_auto_on,
                s.syn_proxy_auto_off,
                s.syn_proxy_mss
            ),
            (SynProxyMode::Auto, Some(2000), None, Some(1400))
        );
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        assert_eq!(
            Config::from_toml(GOOD, None).unwrap().services[0].syn_proxy,
            SynProxyMode::Off
        );
    }

    /// `node.vlan` is a VLAN id (1-4094), named by line when it is not, and round-trips.
    #[test]
    fn node_vlan_is_a_vlan_id() {
        let with = |keys: &str| GOOD.replacen("[node]\n", &format!("[node]\n{keys}"), 1);
        for bad in ["vlan = 0\n", "vlan = 4095\n"] {
            let e = err(&with(bad));
            assert_eq!((e.key.as_str(), e.line), ("node.vlan", Some(3)), "{e}");
            assert!(e.message.contains("not a VLAN id"), "{e}");
        }
        let c = Config::from_toml(&with("vlan = 100\n"), None).unwrap();
        assert_eq!(c.node.vlan, Some(100));
        assert_eq!(Config::from_toml(&c.to_toml().unwrap(), None).unwrap(), c);
        assert_eq!(Config::from_toml(GOOD, None).unwrap().node.vlan, None);
    }

    /// `[node] start_as` reads "active" (the default) or "standby", names its line when it is
    /// neither, and is written back as it was read.
    #[test]
    fn node_start_as_reads_active_or_standby() {
        assert!(!Config::from_toml(GOOD, None).unwrap().node.start_standby);
        let with = |v: &str| GOOD.replacen("[node]\n", &format!("[node]\nstart_as = \"{v}\"\n"), 1);
        let c = Config::from_toml(&with("standby"), None).unwrap();
        assert!(c.node.start_standby);
        let text = c.to_toml().unwrap();
        assert!(text.contains("start_as = \"standby\""), "{text}");
        assert_eq!(Config::from_toml(&text, None).unwrap(), c);
        assert!(
            !Config::from_toml(&with("active"), None)
                .unwrap()
                .node
                .start_standby
        );
        let e = err(&with("backup"));
        assert_eq!((e.key.as_str(), e.line), ("node.start_as", Some(3)), "{e}");
        assert!(e.fix.contains("standby"), "{e}");
    }
}
