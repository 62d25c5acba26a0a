// A small C layer over libxdp's AF_XDP API (whose ring operations are static inline
// functions Rust cannot call) and libbpf (loading the XDP program from memory, attaching
// it, updating its maps). Every function reports failure by return value and, where it can,
// a message in `err`.
#include <errno.h>
#include <stdarg.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

struct sx_prog {
	struct bpf_object *obj;
	int ifindex;
	unsigned int flags;
	int xsks_fd, vips_fd, nat_fd, node_fd;
};

struct sx_sock {
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	void *area;
	size_t area_len;
	unsigned int frame_size;
	int zerocopy;
};

static void say(char *err, size_t n, const char *what, int e)
{
	if (err && n)
		snprintf(err, n, "%s: %s", what, strerror(e < 0 ? -e : e));
}

/* True when the program attached to ifindex in `mode` is one of ours (by name). */
static int leftover_sluice(int ifindex, unsigned int mode)
{
	__u32 id = 0;
	if (bpf_xdp_query_id(ifindex, mode, &id) || !id)
		return 0;
	int fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return 0;
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	memset(&info, 0, sizeof(info));
	int ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && strcmp(info.name, "sluice_xdp") == 0;
	close(fd);
	return ours;
}

/* Loads the program from memory and attaches it to `ifname`: mode 1 native, 2 generic,
 * 0 native then generic. Returns NULL on failure. *mode_out says which attached. */
static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	return vfprintf(stderr, fmt, ap);
}

struct sx_prog *sx_prog_attach(const void *obj_data, size_t obj_len, const char *ifname,
			       int mode, int *mode_out, char *err, size_t errlen)
{
	/* libbpf's own diagnostics only when asked for: SLUICE_BPF_DEBUG=1. */
	libbpf_set_print(getenv("SLUICE_BPF_DEBUG") ? print_libbpf : NULL);
	int ifindex = if_nametoindex(ifname);
	if (!ifindex) {
		say(err, errlen, "no such interface", errno);
		return NULL;
	}
	struct sx_prog *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->ifindex = ifindex;
	p->obj = bpf_object__open_mem(obj_data, obj_len, NULL);
	long e = libbpf_get_error(p->obj);
	if (e) {
		say(err, errlen, "cannot open the XDP program", (int)e);
		free(p);
		return NULL;
	}
	int r = bpf_object__load(p->obj);
	if (r) {
		say(err, errlen, "the kernel refused the XDP program (is BPF allowed here?)", r);
		bpf_object__close(p->obj);
		free(p);
		return NULL;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(p->obj, "sluice_xdp");
	int fd = prog ? bpf_program__fd(prog) : -1;
	int tries[2] = {XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
	int first = mode == 2 ? 1 : 0, last = mode == 1 ? 0 : 1;
	r = -1;
	for (int i = first; i <= last && fd >= 0; i++) {
		unsigned int f = tries[i] | XDP_FLAGS_UPDATE_IF_NOEXIST;
		r = bpf_xdp_attach(ifindex, fd, f, NULL);
		if ((r == -EBUSY || r == -EEXIST) && leftover_sluice(ifindex, tries[i])) {
			/* A sluice that died without detaching left its program: replace it. Anyone
			 * else's program is never replaced. */
			r = bpf_xdp_attach(ifindex, fd, tries[i], NULL);
		}
		if (r == 0) {
			p->flags = tries[i];
			*mode_out = i + 1;
			break;
		}
	}
	if (r) {
		say(err, errlen, "cannot attach the XDP program (another XDP program on the interface?)", r);
		bpf_object__close(p->obj);
		free(p);
		return NULL;
	}
	p->xsks_fd = bpf_object__find_map_fd_by_name(p->obj, "xsks");
	p->vips_fd = bpf_object__find_map_fd_by_name(p->obj, "vips");
	p->nat_fd = bpf_object__find_map_fd_by_name(p->obj, "nat_backends");
	p->node_fd = bpf_object__find_map_fd_by_name(p->obj, "node");
	return p;
}

int sx_prog_map_fd(struct sx_prog *p, int which)
{
	switch (which) {
	case 0: return p->vips_fd;
	case 1: return p->nat_fd;
	case 2: return p->node_fd;
	default: return p->xsks_fd;
	}
}

/* Updates (op 0) or deletes (op 1) a map entry. Returns 0 or a negative errno. */
int sx_map(int fd, int op, const void *key, const void *value)
{
	int r = op == 0 ? bpf_map_update_elem(fd, key, value, BPF_ANY) : bpf_map_delete_elem(fd, key);
	return r < 0 ? -errno : 0;
}

/* Reads the next key after `key` (NULL: the first) into `next`; 0, or -ENOENT at the end. */
int sx_map_next(int fd, const void *key, void *next)
{
	return bpf_map_get_next_key(fd, key, next) < 0 ? -errno : 0;
}

void sx_prog_detach(struct sx_prog *p)
{
	if (!p)
		return;
	bpf_xdp_detach(p->ifindex, p->flags, NULL);
	bpf_object__close(p->obj);
	free(p);
}

/* An AF_XDP socket on ifname/queue with its own UMEM of `frames` frames of `frame_size`
 * bytes (headroom reserved in each). zerocopy: 1 require, 2 forbid, 0 try then copy. */
struct sx_sock *sx_open(const char *ifname, unsigned int queue, unsigned int frames,
			unsigned int frame_size, unsigned int headroom, unsigned int ring,
			int xsks_fd, int zerocopy, int *zc_out, char *err, size_t errlen)
{
	struct sx_sock *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->frame_size = frame_size;
	s->area_len = (size_t)frames * frame_size;
	s->area = mmap(NULL, s->area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->area == MAP_FAILED) {
		say(err, errlen, "cannot map the UMEM", errno);
		free(s);
		return NULL;
	}
	struct xsk_umem_config uc = {
		.fill_size = ring * 2,
		.comp_size = ring,
		.frame_size = frame_size,
		.frame_headroom = headroom,
		.flags = 0,
	};
	int r = xsk_umem__create(&s->umem, s->area, s->area_len, &s->fill, &s->comp, &uc);
	if (r) {
		say(err, errlen, "cannot create the UMEM", r);
		munmap(s->area, s->area_len);
		free(s);
		return NULL;
	}
	int tries[2] = {XDP_ZEROCOPY, XDP_COPY};
	int first = zerocopy == 2 ? 1 : 0, last = zerocopy == 1 ? 0 : 1;
	r = -1;
	for (int i = first; i <= last; i++) {
		struct xsk_socket_config sc = {
			.rx_size = ring,
			.tx_size = ring,
			.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
			.xdp_flags = 0,
			.bind_flags = tries[i] | XDP_USE_NEED_WAKEUP,
		};
		r = xsk_socket__create(&s->xsk, ifname, queue, s->umem, &s->rx, &s->tx, &sc);
		if (r == 0) {
			s->zerocopy = i == 0;
			*zc_out = s->zerocopy;
			break;
		}
	}
	if (r) {
		say(err, errlen, "cannot create the AF_XDP socket", r);
		xsk_umem__delete(s->umem);
		munmap(s->area, s->area_len);
		free(s);
		return NULL;
	}
	r = xsk_socket__update_xskmap(s->xsk, xsks_fd);
	if (r) {
		say(err, errlen, "cannot register the socket with the XDP program", r);
		xsk_socket__delete(s->xsk);
		xsk_umem__delete(s->umem);
		munmap(s->area, s->area_len);
		free(s);
		return NULL;
	}
	return s;
}

unsigned char *sx_area(struct sx_sock *s) { return s->area; }

/* Up to `max` received frames: their UMEM addresses and lengths. */
unsigned int sx_rx(struct sx_sock *s, unsigned long long *addrs, unsigned int *lens, unsigned int max)
{
	unsigned int idx = 0;
	unsigned int n = xsk_ring_cons__peek(&s->rx, max, &idx);
	for (unsigned int i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, idx + i);
		addrs[i] = d->addr;
		lens[i] = d->len;
	}
	if (n)
		xsk_ring_cons__release(&s->rx, n);
	return n;
}

/* Gives up to `n` free frames to the kernel for receiving; returns how many it took. */
unsigned int sx_fill(struct sx_sock *s, const unsigned long long *addrs, unsigned int n)
{
	unsigned int idx = 0;
	unsigned int room = xsk_prod_nb_free(&s->fill, n);
	if (room < n)
		n = room;
	if (!n)
		return 0;
	if (xsk_ring_prod__reserve(&s->fill, n, &idx) != n)
		return 0;
	for (unsigned int i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&s->fill, idx + i) = addrs[i];
	xsk_ring_prod__submit(&s->fill, n);
	if (xsk_ring_prod__needs_wakeup(&s->fill))
		recvfrom(xsk_socket__fd(s->xsk), NULL, 0, MSG_DONTWAIT, NULL, NULL);
	return n;
}

/* Queues up to `n` frames for transmit and kicks the kernel; returns how many were queued. */
unsigned int sx_tx(struct sx_sock *s, const unsigned long long *addrs, const unsigned int *lens, unsigned int n)
{
	unsigned int idx = 0;
	unsigned int room = xsk_prod_nb_free(&s->tx, n);
	if (room < n)
		n = room;
	if (n && xsk_ring_prod__reserve(&s->tx, n, &idx) == n) {
		for (unsigned int i = 0; i < n; i++) {
			struct xdp_desc *d = xsk_ring_prod__tx_desc(&s->tx, idx + i);
			d->addr = addrs[i];
			d->len = lens[i];
			d->options = 0;
		}
		xsk_ring_prod__submit(&s->tx, n);
	} else {
		n = 0;
	}
	/* Copy mode needs a kick to transmit; zero-copy only when the driver asks. */
	if (!s->zerocopy || xsk_ring_prod__needs_wakeup(&s->tx))
		sendto(xsk_socket__fd(s->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0);
	return n;
}

/* Up to `max` transmitted frames the kernel is done with. */
unsigned int sx_complete(struct sx_sock *s, unsigned long long *addrs, unsigned int max)
{
	unsigned int idx = 0;
	unsigned int n = xsk_ring_cons__peek(&s->comp, max, &idx);
	for (unsigned int i = 0; i < n; i++)
		addrs[i] = *xsk_ring_cons__comp_addr(&s->comp, idx + i);
	if (n)
		xsk_ring_cons__release(&s->comp, n);
	return n;
}

/* Kernel counters for the socket: rx dropped (no fill buffers), rx invalid, tx invalid. */
int sx_stats(struct sx_sock *s, unsigned long long out[4])
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);
	if (getsockopt(xsk_socket__fd(s->xsk), SOL_XDP, XDP_STATISTICS, &st, &len))
		return -errno;
	out[0] = st.rx_dropped;
	out[1] = st.rx_invalid_descs;
	out[2] = st.tx_invalid_descs;
	out[3] = st.rx_ring_full;
	return 0;
}

void sx_close(struct sx_sock *s)
{
	if (!s)
		return;
	xsk_socket__delete(s->xsk);
	xsk_umem__delete(s->umem);
	munmap(s->area, s->area_len);
	free(s);
}
