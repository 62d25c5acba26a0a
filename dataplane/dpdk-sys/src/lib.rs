//! Raw FFI to the system DPDK (Debian 12's `libdpdk-dev`, 22.11 LTS, found with pkg-config):
//! bindgen output for the functions and types sluice uses, and `sluice_*` functions from a
//! small C shim that wraps DPDK's static inline functions (burst RX/TX, mbuf free, lcore id,
//! `rte_errno`) and does port set-up. Everything here is `unsafe`; the safe wrapper is
//! `dataplane::dpdk`.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    /// bindgen's rte_mbuf layout (read directly on the hot path) matches the C compiler's.
    #[test]
    fn mbuf_layout_matches_c() {
        let mut c = [0usize; 6];
        unsafe { sluice_mbuf_layout(c.as_mut_ptr()) };
        let rust = [
            std::mem::offset_of!(rte_mbuf, buf_addr),
            std::mem::offset_of!(rte_mbuf, data_off),
            std::mem::offset_of!(rte_mbuf, nb_segs),
            std::mem::offset_of!(rte_mbuf, pkt_len),
            std::mem::offset_of!(rte_mbuf, data_len),
            std::mem::size_of::<rte_mbuf>(),
        ];
        assert_eq!(rust, c);
    }
}
