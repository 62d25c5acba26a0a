/* sluice's C shim over DPDK: wrappers for static inline functions (which bindgen cannot
 * bind) and port set-up done in C, where rte_eth_conf's unions and bitfields are natural. */
#ifndef SLUICE_SHIM_H
#define SLUICE_SHIM_H

#include <stddef.h>
#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t sluice_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t sluice_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
void sluice_pktmbuf_free(struct rte_mbuf *m);
/* A fresh mbuf from `mp` holding `len` bytes of (unset) data, or NULL. */
struct rte_mbuf *sluice_pktmbuf_alloc(struct rte_mempool *mp, uint16_t len);
void sluice_pktmbuf_free_bulk(struct rte_mbuf **m, unsigned int n);
int sluice_errno(void);
unsigned int sluice_lcore_id(void);

/* What port set-up found and did. */
struct sluice_port_info {
    uint16_t rx_queues;
    uint16_t tx_queues;
    uint16_t reta_size;      /* 0: the device has no RSS redirection table */
    uint64_t rss_hf;         /* hash functions enabled (0: no RSS) */
    /* Checksum offloads the device offers, of IPv4 header, TCP, UDP: bits 0, 1, 2 (0: none,
     * as net_pcap). Reported, not used: sluice computes every checksum itself. */
    uint8_t tx_cksum;
    uint8_t rx_cksum;
    int socket_id;
    char driver[64];
};

/* Configures `port` with `queues` RX/TX queue pairs, RX queue q filling from pools[q] (the
 * pool on the NUMA socket of the worker that polls it), RSS on with `rss_key`
 * (where the device supports it) and a round-robin redirection table, then starts it.
 * Returns 0, or a negative errno with a message in `err`. */
int sluice_port_setup(uint16_t port, uint16_t queues, uint16_t rx_desc, uint16_t tx_desc,
                      struct rte_mempool **pools, const uint8_t *rss_key, uint8_t rss_key_len,
                      struct sluice_port_info *info, char *err, size_t errlen);

/* offsetof() of the rte_mbuf fields Rust reads directly, and sizeof(struct rte_mbuf), so a
 * test can check bindgen's layout against the C compiler's: buf_addr, data_off, nb_segs,
 * pkt_len, data_len, size. */
void sluice_mbuf_layout(size_t out[6]);

#endif
