/* The small-packet flood's frames, made in the kernel: run by flood.c through BPF_PROG_RUN in
 * live-frames mode, this program writes the template frame's headers into each frame, gives
 * it the next of FLOWS source ports and returns XDP_TX, which sends it out of the interface
 * it names. No socket and no skb on the sending side: the generator costs its core a
 * fraction of what a sendmmsg() loop does, so the paths under test, not the generator, set
 * the rate.
 *
 * The headers are written whole every time because live-frames mode recycles its pages with
 * whatever they hold: a path that rewrites frames in place (the kernel's NAT forwarding
 * them) would otherwise have the generator send its rewritten frames again. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Ethernet 14 + IPv4 20 + UDP 8. */
#define HEADERS 42

struct flood_config {
  __u32 flows;
  __u32 first_port;
  unsigned char headers[HEADERS + 2];
};

/* Set by flood.c before the first run. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct flood_config);
} config SEC(".maps");

static __u32 seq;

SEC("xdp") int flood(struct xdp_md *ctx) {
  unsigned char *d = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
  __u32 k = 0;
  struct flood_config *c = bpf_map_lookup_elem(&config, &k);
  if (d + HEADERS > end || !c || c->flows == 0) return XDP_ABORTED;
  __builtin_memcpy(d, c->headers, HEADERS);
  __u32 port = c->first_port + seq++ % c->flows;
  /* The UDP source port; the UDP checksum is zero (none, as IPv4 allows), so nothing else
     changes. */
  d[34] = port >> 8;
  d[35] = port & 0xff;
  return XDP_TX;
}

/* On a link's far side: a veth takes the frames its peer sends by XDP_TX only when it runs
 * an XDP program itself (attached with `ip link set dev ... xdp obj flood.bpf.o sec pass`). */
SEC("pass") int pass_all(struct xdp_md *ctx) { return XDP_PASS; }

char _license[] SEC("license") = "GPL";
