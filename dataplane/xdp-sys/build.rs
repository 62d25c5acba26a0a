//! Compiles the XDP program with clang (`-target bpf`) and the C shim over libxdp and libbpf,
//! both found with pkg-config. A missing package stops the build with a message naming it.

use std::env;
use std::path::PathBuf;

fn need(lib: &str, package: &str) -> pkg_config::Library {
    match pkg_config::probe_library(lib) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("\nerror: {lib} was not found with pkg-config ({e}).\n  fix: apt-get install {package}\n       (scripts/test.sh and scripts/demo.sh do this for you)\n");
            std::process::exit(1);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=bpf/sluice_xdp.c");
    let xdp = need("libxdp", "libxdp-dev");
    let bpf = need("libbpf", "libbpf-dev");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut b = cc::Build::new();
    b.file("src/shim.c").opt_level(2).warnings(false);
    for p in xdp.include_paths.iter().chain(&bpf.include_paths) {
        b.include(p);
    }
    b.compile("sluice_xdp_shim");
    // The XDP program: BPF bytecode, embedded in the binary and loaded from memory.
    let arch_include = format!(
        "/usr/include/{}-linux-gnu",
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let obj = out.join("sluice_xdp.o");
    let status = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", "bpf/sluice_xdp.c", "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang could not compile bpf/sluice_xdp.c ({s})"),
        Err(e) => {
            eprintln!("\nerror: clang is needed to compile the XDP program ({e}).\n  fix: apt-get install clang\n");
            std::process::exit(1);
        }
    }
}
