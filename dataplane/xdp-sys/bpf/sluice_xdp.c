// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
// (The kernel is told "GPL", which this dual licence allows.)
// sluice's XDP program: frames the balancer owns go to the queue's AF_XDP socket; everything
// else passes to the kernel untouched. The balancer's frames are: anything to a VIP address
// (TCP/UDP to a service, and ICMP errors about its flows), ARP requests and IPv6 neighbour
// solicitations for a VIP or the node address, ARP replies and neighbour advertisements to
// the node address (answers to sluice's own requests), TCP/UDP to the node address in the SNAT port
// range (SNAT replies) or in the L7 pool's upstream port range (replies on the connections
// it opened to backends), and TCP/UDP from a `nat` backend's address and port (NAT replies).
// The maps are filled and updated by sluice from its configuration snapshot.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct addr_key {
	__u8 addr[16];   /* IPv4 as ::ffff:a.b.c.d */
	__u16 port;      /* network order; 0 in the VIP-address entries */
	__u8 proto;      /* 0 in the VIP-address entries */
	__u8 pad;
};

struct node_cfg {
	__u8 v4[4];
	__u8 v6[16];
	__u16 snat_lo;   /* host order */
	__u16 snat_hi;
	__u8 has_v4;
	__u8 has_v6;
	__u8 neigh;      /* 1: sluice answers ARP / neighbour solicitation itself */
	__u8 pad;
	__u16 up_lo;     /* the L7 pool's upstream source ports, host order; 0-0: none */
	__u16 up_hi;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct addr_key);
	__type(value, __u8);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct addr_key);
	__type(value, __u8);
} nat_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_cfg);
} node SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

struct arp_ipv4 {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[6], spa[4], tha[6], tpa[4];
};

static __always_inline int to_sluice(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

static __always_inline void v4_key(struct addr_key *k, const void *a)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr[10] = 0xff;
	k->addr[11] = 0xff;
	__builtin_memcpy(&k->addr[12], a, 4);
}

static __always_inline int is_vip_addr(struct addr_key *k)
{
	k->port = 0;
	k->proto = 0;
	return bpf_map_lookup_elem(&vips, k) != NULL;
}

/* Byte comparison the verifier accepts (clang lowers the memory-compare builtin to a libc
 * call, which BPF programs cannot make). */
static __always_inline int same(const __u8 *a, const __u8 *b, int n)
{
	__u8 diff = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (i < n)
			diff |= a[i] ^ b[i];
	return diff == 0;
}

static __always_inline int ports_ok(void *l4, void *end)
{
	return l4 + 4 <= end;
}

SEC("xdp")
int sluice_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *v = l3;
		if ((void *)(v + 1) > end)
			return XDP_PASS;
		proto = v->proto;
		l3 = v + 1;
	}
	__u32 zero = 0;
	struct node_cfg *n = bpf_map_lookup_elem(&node, &zero);
	struct addr_key k;
	if (proto == bpf_htons(ETH_P_ARP)) {
		struct arp_ipv4 *a = l3;
		if (!n || !n->neigh)
			return XDP_PASS;
		if ((void *)(a + 1) > end || a->ptype != bpf_htons(ETH_P_IP))
			return XDP_PASS;
		/* Replies to sluice's own requests (resolving backends and the gateway). */
		if (a->op == bpf_htons(2))
			return n->has_v4 && same(a->tpa, n->v4, 4) ? to_sluice(ctx) : XDP_PASS;
		if (a->op != bpf_htons(1))
			return XDP_PASS;
		v4_key(&k, a->tpa);
		if (is_vip_addr(&k))
			return to_sluice(ctx);
		if (n && n->has_v4 && same(a->tpa, n->v4, 4))
			return to_sluice(ctx);
		return XDP_PASS;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		v4_key(&k, &ip->daddr);
		if (is_vip_addr(&k))
			return to_sluice(ctx);
		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
			return XDP_PASS;
		if (ip->frag_off & bpf_htons(0x1fff))
			return XDP_PASS;
		__u32 ihl = ip->ihl * 4;
		if (ihl < 20)
			return XDP_PASS;
		__u16 *ports = l3 + ihl;
		if (!ports_ok(ports, end))
			return XDP_PASS;
		if (n && n->has_v4 && same((const __u8 *)&ip->daddr, n->v4, 4)) {
			__u16 dport = bpf_ntohs(ports[1]);
			if (dport >= n->snat_lo && dport <= n->snat_hi)
				return to_sluice(ctx);
			if (n->up_hi && dport >= n->up_lo && dport <= n->up_hi)
				return to_sluice(ctx);
		}
		v4_key(&k, &ip->saddr);
		k.port = ports[0];
		k.proto = ip->protocol;
		if (bpf_map_lookup_elem(&nat_backends, &k))
			return to_sluice(ctx);
		return XDP_PASS;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		__builtin_memset(&k, 0, sizeof(k));
		__builtin_memcpy(k.addr, &ip6->daddr, 16);
		if (is_vip_addr(&k))
			return to_sluice(ctx);
		__u8 next = ip6->nexthdr;
		void *l4 = ip6 + 1;
		if (next == IPPROTO_ICMPV6) {
			/* Neighbour solicitation (135) for a VIP or the node address; neighbour
			 * advertisements (136) answering sluice's own solicitations. */
			__u8 *icmp = l4;
			if (!n || !n->neigh || (void *)(icmp + 24) > end)
				return XDP_PASS;
			if (icmp[0] == 136)
				return n->has_v6 && same((const __u8 *)&ip6->daddr, n->v6, 16) ?
					to_sluice(ctx) : XDP_PASS;
			if (icmp[0] != 135)
				return XDP_PASS;
			__builtin_memcpy(k.addr, icmp + 8, 16);
			if (is_vip_addr(&k))
				return to_sluice(ctx);
			if (n && n->has_v6 && same(icmp + 8, n->v6, 16))
				return to_sluice(ctx);
			return XDP_PASS;
		}
		if (next != IPPROTO_TCP && next != IPPROTO_UDP)
			return XDP_PASS;
		__u16 *ports = l4;
		if (!ports_ok(ports, end))
			return XDP_PASS;
		if (n && n->has_v6 && same((const __u8 *)&ip6->daddr, n->v6, 16)) {
			__u16 dport = bpf_ntohs(ports[1]);
			if (dport >= n->snat_lo && dport <= n->snat_hi)
				return to_sluice(ctx);
			if (n->up_hi && dport >= n->up_lo && dport <= n->up_hi)
				return to_sluice(ctx);
		}
		__builtin_memcpy(k.addr, &ip6->saddr, 16);
		k.port = ports[0];
		k.proto = next;
		if (bpf_map_lookup_elem(&nat_backends, &k))
			return to_sluice(ctx);
		return XDP_PASS;
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
