#include <stdio.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "shim.h"

uint16_t sluice_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t sluice_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, queue, pkts, n);
}

void sluice_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

struct rte_mbuf *sluice_pktmbuf_alloc(struct rte_mempool *mp, uint16_t len)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
    if (m && !rte_pktmbuf_append(m, len)) {
        rte_pktmbuf_free(m);
        return NULL;
    }
    return m;
}

void sluice_pktmbuf_free_bulk(struct rte_mbuf **m, unsigned int n) { rte_pktmbuf_free_bulk(m, n); }

int sluice_errno(void) { return rte_errno; }

unsigned int sluice_lcore_id(void) { return rte_lcore_id(); }

int sluice_port_setup(uint16_t port, uint16_t queues, uint16_t rx_desc, uint16_t tx_desc,
                      struct rte_mempool **pools, const uint8_t *rss_key, uint8_t rss_key_len,
                      struct sluice_port_info *info, char *err, size_t errlen)
{
    struct rte_eth_dev_info dev;
    struct rte_eth_conf conf;
    int ret, q;
    uint16_t nb_rxd = rx_desc, nb_txd = tx_desc;
    static uint8_t key[64];

    memset(info, 0, sizeof(*info));
    ret = rte_eth_dev_info_get(port, &dev);
    if (ret != 0) {
        snprintf(err, errlen, "cannot read device info: %s", rte_strerror(-ret));
        return ret;
    }
    snprintf(info->driver, sizeof(info->driver), "%s", dev.driver_name ? dev.driver_name : "?");
    info->tx_cksum = ((dev.tx_offload_capa & RTE_ETH_TX_OFFLOAD_IPV4_CKSUM) ? 1 : 0) |
                     ((dev.tx_offload_capa & RTE_ETH_TX_OFFLOAD_TCP_CKSUM) ? 2 : 0) |
                     ((dev.tx_offload_capa & RTE_ETH_TX_OFFLOAD_UDP_CKSUM) ? 4 : 0);
    info->rx_cksum = ((dev.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM) ? 1 : 0) |
                     ((dev.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TCP_CKSUM) ? 2 : 0) |
                     ((dev.rx_offload_capa & RTE_ETH_RX_OFFLOAD_UDP_CKSUM) ? 4 : 0);
    if (queues > dev.max_rx_queues || queues > dev.max_tx_queues) {
        snprintf(err, errlen, "device %s has at most %u RX / %u TX queues, %u workers need one pair each",
                 info->driver, dev.max_rx_queues, dev.max_tx_queues, queues);
        return -EINVAL;
    }
    memset(&conf, 0, sizeof(conf));
    info->rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & dev.flow_type_rss_offloads;
    if (queues > 1 && info->rss_hf != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        if (rss_key_len > sizeof(key))
            rss_key_len = sizeof(key);
        memcpy(key, rss_key, rss_key_len);
        conf.rx_adv_conf.rss_conf.rss_key = key;
        conf.rx_adv_conf.rss_conf.rss_key_len = dev.hash_key_size ? dev.hash_key_size : rss_key_len;
        conf.rx_adv_conf.rss_conf.rss_hf = info->rss_hf;
    } else {
        info->rss_hf = 0;
    }
    ret = rte_eth_dev_configure(port, queues, queues, &conf);
    if (ret != 0) {
        snprintf(err, errlen, "rte_eth_dev_configure: %s", rte_strerror(-ret));
        return ret;
    }
    ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
    if (ret != 0) {
        snprintf(err, errlen, "rte_eth_dev_adjust_nb_rx_tx_desc: %s", rte_strerror(-ret));
        return ret;
    }
    info->socket_id = rte_eth_dev_socket_id(port);
    for (q = 0; q < queues; q++) {
        ret = rte_eth_rx_queue_setup(port, q, nb_rxd, info->socket_id, NULL, pools[q]);
        if (ret != 0) {
            snprintf(err, errlen, "RX queue %d setup: %s", q, rte_strerror(-ret));
            return ret;
        }
        ret = rte_eth_tx_queue_setup(port, q, nb_txd, info->socket_id, NULL);
        if (ret != 0) {
            snprintf(err, errlen, "TX queue %d setup: %s", q, rte_strerror(-ret));
            return ret;
        }
    }
    ret = rte_eth_dev_start(port);
    if (ret != 0) {
        snprintf(err, errlen, "rte_eth_dev_start: %s", rte_strerror(-ret));
        return ret;
    }
    /* Round-robin redirection table: entry i -> queue i % queues. sluice's flow-ownership rule
     * (dataplane::steering) assumes exactly this mapping. */
    if (info->rss_hf != 0 && dev.reta_size > 0) {
        struct rte_eth_rss_reta_entry64 reta[RTE_ETH_RSS_RETA_SIZE_512 / RTE_ETH_RETA_GROUP_SIZE];
        uint16_t i;
        memset(reta, 0, sizeof(reta));
        for (i = 0; i < dev.reta_size && i < RTE_ETH_RSS_RETA_SIZE_512; i++) {
            reta[i / RTE_ETH_RETA_GROUP_SIZE].mask |= 1ULL << (i % RTE_ETH_RETA_GROUP_SIZE);
            reta[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] = i % queues;
        }
        if (rte_eth_dev_rss_reta_update(port, reta, dev.reta_size) == 0)
            info->reta_size = dev.reta_size;
    }
    rte_eth_promiscuous_enable(port);
    info->rx_queues = queues;
    info->tx_queues = queues;
    return 0;
}

void sluice_mbuf_layout(size_t out[6])
{
    out[0] = offsetof(struct rte_mbuf, buf_addr);
    out[1] = offsetof(struct rte_mbuf, data_off);
    out[2] = offsetof(struct rte_mbuf, nb_segs);
    out[3] = offsetof(struct rte_mbuf, pkt_len);
    out[4] = offsetof(struct rte_mbuf, data_len);
    out[5] = sizeof(struct rte_mbuf);
}
