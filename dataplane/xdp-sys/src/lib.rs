//! FFI for the AF_XDP driver: the C shim's functions (src/shim.c, over libxdp's xsk API and
//! libbpf) and the XDP program's bytecode. `dataplane::xdp` is the only caller, and the only
//! safe wrapper.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};

/// The compiled XDP program (bpf/sluice_xdp.c), loaded from memory.
pub static XDP_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sluice_xdp.o"));

#[repr(C)]
pub struct sx_prog {
    _private: [u8; 0],
}

#[repr(C)]
pub struct sx_sock {
    _private: [u8; 0],
}

/// Key of the `vips` and `nat_backends` maps (matches `struct addr_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct addr_key {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// The `node` map's value (matches `struct node_cfg`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct node_cfg {
    pub v4: [u8; 4],
    pub v6: [u8; 16],
    pub snat_lo: u16,
    pub snat_hi: u16,
    pub has_v4: u8,
    pub has_v6: u8,
    /// 1 when sluice answers ARP and neighbour solicitations itself.
    pub neigh: u8,
    pub pad: u8,
    /// The L7 pool's upstream source ports (host order; 0, 0 when it has none).
    pub up_lo: u16,
    pub up_hi: u16,
}

pub const MAP_VIPS: c_int = 0;
pub const MAP_NAT_BACKENDS: c_int = 1;
pub const MAP_NODE: c_int = 2;

#[link(name = "sluice_xdp_shim", kind = "static")]
extern "C" {
    pub fn sx_prog_attach(
        obj: *const c_void,
        len: usize,
        ifname: *const c_char,
        mode: c_int,
        mode_out: *mut c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> *mut sx_prog;
    pub fn sx_prog_map_fd(p: *mut sx_prog, which: c_int) -> c_int;
    pub fn sx_map(fd: c_int, op: c_int, key: *const c_void, value: *const c_void) -> c_int;
    pub fn sx_map_next(fd: c_int, key: *const c_void, next: *mut c_void) -> c_int;
    pub fn sx_prog_detach(p: *mut sx_prog);
    #[allow(clippy::too_many_arguments)]
    pub fn sx_open(
        ifname: *const c_char,
        queue: c_uint,
        frames: c_uint,
        frame_size: c_uint,
        headroom: c_uint,
        ring: c_uint,
        xsks_fd: c_int,
        zerocopy: c_int,
        zc_out: *mut c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> *mut sx_sock;
    pub fn sx_area(s: *mut sx_sock) -> *mut u8;
    pub fn sx_rx(
        s: *mut sx_sock,
        addrs: *mut c_ulonglong,
        lens: *mut c_uint,
        max: c_uint,
    ) -> c_uint;
    pub fn sx_fill(s: *mut sx_sock, addrs: *const c_ulonglong, n: c_uint) -> c_uint;
    pub fn sx_tx(
        s: *mut sx_sock,
        addrs: *const c_ulonglong,
        lens: *const c_uint,
        n: c_uint,
    ) -> c_uint;
    pub fn sx_complete(s: *mut sx_sock, addrs: *mut c_ulonglong, max: c_uint) -> c_uint;
    pub fn sx_stats(s: *mut sx_sock, out: *mut c_ulonglong) -> c_int;
    pub fn sx_close(s: *mut sx_sock);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_xdp_program_is_a_bpf_elf_object() {
        let p = super::XDP_PROGRAM;
        assert_eq!(&p[..4], b"\x7fELF");
        // e_machine 247 is EM_BPF.
        assert_eq!(u16::from_le_bytes([p[18], p[19]]), 247);
    }
}
