/* xdp-flood: 64-byte UDP frames over FLOWS flows, sent from the kernel for SECONDS.
 *
 *   xdp-flood IFNAME DST_MAC SRC_IP DST_IP DST_PORT FLOWS SECONDS BPF_OBJECT
 *
 * Loads flood.bpf.c's program and runs it with BPF_PROG_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18+) over a template frame from IFNAME's MAC to
 * DST_MAC, SRC_IP:port -> DST_IP:DST_PORT, source ports 10000.. (one per flow). Each frame
 * the program returns XDP_TX for goes out of IFNAME; IFNAME must run an XDP program (the
 * object's `pass_all`) for its driver to transmit XDP frames, and so must a veth's peer.
 * Prints the frames it sent and the rate. Built and run by scripts/bench-l4-paths.sh. */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int parse_mac(const char *s, unsigned char m[6]) {
  unsigned int b[6];
  if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) return -1;
  for (int i = 0; i < 6; i++) {
    if (b[i] > 255) return -1;
    m[i] = b[i];
  }
  return 0;
}

static uint16_t ip_checksum(const unsigned char *h) {
  uint32_t s = 0;
  for (int i = 0; i < 20; i += 2) s += (h[i] << 8) | h[i + 1];
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return ~s;
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: xdp-flood IFNAME DST_MAC SRC_IP DST_IP DST_PORT FLOWS SECONDS BPF_OBJECT\n");
    return 2;
  }
  const char *ifname = argv[1];
  unsigned char dst_mac[6], src_mac[6];
  struct in_addr src, dst;
  int dport = atoi(argv[5]), flows = atoi(argv[6]);
  double secs = atof(argv[7]);
  if (parse_mac(argv[2], dst_mac) || !inet_aton(argv[3], &src) || !inet_aton(argv[4], &dst) ||
      dport <= 0 || dport > 65535 || flows <= 0 || flows > 55535 || secs <= 0) {
    fprintf(stderr, "xdp-flood: bad argument (DST_MAC aa:bb:cc:dd:ee:ff, IPv4 addresses, "
                    "DST_PORT 1-65535, FLOWS 1-55535, SECONDS > 0)\n");
    return 2;
  }
  unsigned int ifindex = if_nametoindex(ifname);
  if (!ifindex) {
    fprintf(stderr, "xdp-flood: no interface %s\n", ifname);
    return 1;
  }
  int sock = socket(AF_INET, SOCK_DGRAM, 0);
  struct ifreq ifr = {0};
  strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
  if (sock < 0 || ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) {
    fprintf(stderr, "xdp-flood: cannot read %s's MAC: %s\n", ifname, strerror(errno));
    return 1;
  }
  memcpy(src_mac, ifr.ifr_hwaddr.sa_data, 6);
  close(sock);

  struct bpf_object *obj = bpf_object__open_file(argv[8], NULL);
  struct bpf_program *p;
  if (obj)
    bpf_object__for_each_program(p, obj) bpf_program__set_type(p, BPF_PROG_TYPE_XDP);
  if (!obj || bpf_object__load(obj)) {
    fprintf(stderr, "xdp-flood: cannot load %s: %s\n", argv[8], strerror(errno));
    return 1;
  }
  struct bpf_program *prog = bpf_object__find_program_by_name(obj, "flood");
  struct bpf_program *pass = bpf_object__find_program_by_name(obj, "pass_all");
  struct bpf_map *config = bpf_object__find_map_by_name(obj, "config");
  if (!prog || !pass || !config) {
    fprintf(stderr, "xdp-flood: %s lacks flood, pass_all or config\n", argv[8]);
    return 1;
  }
  unsigned char f[60] = {0};
  memcpy(f, dst_mac, 6);
  memcpy(f + 6, src_mac, 6);
  f[12] = 0x08;
  unsigned char *ip = f + 14;
  ip[0] = 0x45;
  ip[3] = 46; /* 20 + 8 + 18 bytes of payload: a 60-byte frame, 64 with the FCS */
  ip[6] = 0x40;
  ip[8] = 64;
  ip[9] = 17;
  memcpy(ip + 12, &src, 4);
  memcpy(ip + 16, &dst, 4);
  uint16_t c = ip_checksum(ip);
  ip[10] = c >> 8;
  ip[11] = c & 0xff;
  unsigned char *udp = f + 34;
  udp[2] = dport >> 8;
  udp[3] = dport & 0xff;
  udp[5] = 26;

  /* The program writes these headers into every frame it sends (see flood.bpf.c). */
  struct {
    unsigned int flows, first_port;
    unsigned char headers[44];
  } cfg = {(unsigned int)flows, 10000, {0}};
  memcpy(cfg.headers, f, 42);
  unsigned int zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(config), &zero, &cfg, 0)) {
    fprintf(stderr, "xdp-flood: cannot configure the flood: %s\n", strerror(errno));
    return 1;
  }

  /* The sending interface runs pass_all, so its driver has XDP transmit queues. */
  int pass_fd = bpf_program__fd(pass);
  if (bpf_xdp_attach(ifindex, pass_fd, XDP_FLAGS_DRV_MODE, NULL)) {
    fprintf(stderr, "xdp-flood: cannot attach an XDP program to %s (one attached already?): %s\n", ifname, strerror(errno));
    return 1;
  }

  struct xdp_md ctx = {.data_end = sizeof f, .ingress_ifindex = ifindex};
  /* A run's frames, at a few M a second: the deadline is checked every ~50 ms. */
  const unsigned int repeat = 1u << 17;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = f, .data_size_in = sizeof f, .ctx_in = &ctx,
              .ctx_size_in = sizeof ctx, .repeat = repeat, .batch_size = 64,
              .flags = BPF_F_TEST_XDP_LIVE_FRAMES);
  int fd = bpf_program__fd(prog);
  double start = now(), end = start + secs, t;
  unsigned long long sent = 0;
  int rc = 0;
  while ((t = now()) < end) {
    if (bpf_prog_test_run_opts(fd, &opts)) {
      fprintf(stderr, "xdp-flood: BPF_PROG_RUN: %s\n", strerror(errno));
      rc = 1;
      break;
    }
    sent += repeat;
  }
  t = now();
  bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
  printf("xdp-flood: %llu frames in %.2f s, %.3f M frames/s\n", sent, t - start,
         sent / (t - start) / 1e6);
  return rc;
}
