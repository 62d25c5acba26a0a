//! Finds the system DPDK with pkg-config, generates bindings for the API sluice uses, and
//! compiles the C shim.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/wrapper.h");
    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("\nerror: DPDK 22.11 or newer was not found with pkg-config ({e}).\n  fix: install Debian's DPDK development package: apt-get install libdpdk-dev\n       (scripts/test.sh and scripts/demo.sh do this for you)\n");
            std::process::exit(1);
        }
    };
    // Include paths, then the flags DPDK's headers depend on (-include rte_config.h, -march).
    let mut clang_args: Vec<String> = dpdk
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    let raw = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut words = raw.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(f) = words.next() {
                clang_args.push("-include".into());
                clang_args.push(f.into());
            }
        } else if w.starts_with("-march") || w.starts_with("-m") || w.starts_with("-D") {
            clang_args.push(w.into());
        }
    }
    let mut build = cc::Build::new();
    build.file("src/shim.c").opt_level(2).warnings(false);
    for p in &dpdk.include_paths {
        build.include(p);
    }
    for a in clang_args.iter().filter(|a| !a.starts_with("-I")) {
        build.flag(a);
    }
    build.compile("sluice_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("src/wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("sluice_.*")
        .allowlist_function("rte_eal_(init|cleanup)")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_thread_(register|unregister)")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_eth_find_next")
        .allowlist_function("rte_mempool_(in_use_count|avail_count|free)")
        .allowlist_function(
            "rte_eth_dev_(count_avail|get_port_by_name|get_name_by_port|stop|close|socket_id)",
        )
        .allowlist_function("rte_eth_(stats_get|stats_reset|link_get_nowait|macaddr_get)")
        .allowlist_function("rte_socket_id")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_eth_stats")
        .allowlist_type("rte_eth_link")
        .allowlist_type("rte_ether_addr")
        .allowlist_type("sluice_port_info")
        .allowlist_var("RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_MAX_ETHPORTS")
        .opaque_type("rte_mempool")
        .layout_tests(false)
        .derive_default(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on the DPDK headers: {e}"));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings");
}
