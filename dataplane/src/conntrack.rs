//! Per-worker connection tracking.
//!
//! Flows live densely in a slab (freed slots are reused first, so live flows stay packed), and
//! a [`FlowIndex`] of slot ids (64-byte buckets, prefetchable) indexes them by key; a second one
//! indexes NAT and SNAT flows by their reply tuple. Each slab slot is one 64-byte cache line:
//! the flow key packed into five words ([`PackedKey`]: no `IpAddr` enums to match) and the
//! [`FlowHot`] fields every packet of the flow reads or writes. What only a new flow, a
//! configuration change, a reply or a tool needs ([`FlowCold`]: backend address, creation time,
//! reply key) lives in a parallel array, so a packet of an established flow touches exactly
//! two lines: its index bucket and its slot. The worker prefetches both for a whole burst
//! before processing it, so the memory accesses of 32 lookups overlap instead of adding up.
//! Everything is reserved at full capacity up front, so inserting never allocates. Every live
//! slot also sits once in a fixed-size ring, which is walked a few entries per burst (CLOCK
//! style): an expired flow at the head is removed, a live one goes to the back. When the table
//! is full, an insert looks at most [`EVICT_SCAN`] ring entries and evicts the first expired one
//! or else the least recently seen of them, so a full table costs a bounded amount of work and
//! never stalls forwarding.
//!
//! Half-open flows — TCP flows seen only as a SYN, which is all a flood of spoofed SYNs makes
//! — live on a ring of their own, bounded to a share of the table (`half_open_percent`) and
//! expiring on the short `tcp_syn_timeout`: a new half-open flow past that share evicts the
//! oldest half-open one, and a full table evicts half-open flows before any other, so a
//! flood cannot push established flows out while half-open ones remain. A half-open flow
//! whose handshake completes moves to the main ring when its ring is next walked.
//!
//! A flow keeps the backend it was given for as long as it is tracked, whatever happens to the
//! Maglev table: that is what keeps established connections in place when backends change.

use crate::flowindex::{prefetch_read, FlowIndex};
use crate::setup::ConntrackSetup as Timeouts;
use crate::synproxy::{ProxyHandshake, ProxyShift};
use packet::flow::mix64;
use packet::FlowKey;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Ring entries an insert into a full table may examine.
pub const EVICT_SCAN: usize = 8;

/// Protocol state, which picks the idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    /// TCP: only a SYN seen so far.
    TcpSyn,
    /// TCP, SYN proxy: the client completed its handshake with sluice, and sluice's SYN to
    /// the backend awaits its SYN-ACK. Half-open, like `TcpSyn`.
    TcpProxyOpening,
    TcpEstablished,
    /// TCP: a FIN or RST seen.
    TcpClosing,
    Udp,
}

/// What the data path remembers about one flow (the whole record, as inserted and reported;
/// stored split into [`FlowHot`] and [`FlowCold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Indices of the service and backend in the snapshot of generation `generation`
    /// (`u16::MAX` where there is none); the worker re-resolves them when the snapshot moves.
    pub service: u16,
    pub backend: u16,
    pub generation: u32,
    pub backend_addr: SocketAddr,
    /// SNAT source port (0 unless the service is `snat`).
    pub snat_port: u16,
    pub state: FlowState,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// The reverse-index key, for NAT and SNAT flows.
    pub reply_key: Option<FlowKey>,
    /// SYN proxy: what the backend's sequence numbers add to reach the client's view, how
    /// windows rescale, and the handshake (all zero / default for a flow not proxied).
    pub seq_delta: u32,
    pub proxy_shift: ProxyShift,
    pub proxy: ProxyHandshake,
}

impl FlowState {
    /// Half-open: on the half-open ring, with the SYN timeout.
    #[inline(always)]
    pub fn is_half_open(self) -> bool {
        matches!(self, FlowState::TcpSyn | FlowState::TcpProxyOpening)
    }
}

/// The part of a flow every one of its packets reads: 24 bytes, beside its 40-byte key in one
/// cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowHot {
    pub last_seen_ns: u64,
    pub generation: u32,
    /// SYN proxy: added to the backend's sequence numbers toward the client (and taken from
    /// the client's acknowledgements toward the backend).
    pub seq_delta: u32,
    pub service: u16,
    pub backend: u16,
    pub snat_port: u16,
    pub state: FlowState,
    pub proxy: ProxyShift,
}

/// The part of a flow read only when it is created, re-resolved after a configuration
/// change, replied to, removed or listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowCold {
    pub backend_addr: SocketAddr,
    pub created_ns: u64,
    pub reply_key: Option<FlowKey>,
    pub proxy: ProxyHandshake,
}

impl Flow {
    fn split(&self) -> (FlowHot, FlowCold) {
        (
            FlowHot {
                last_seen_ns: self.last_seen_ns,
                generation: self.generation,
                service: self.service,
                backend: self.backend,
                snat_port: self.snat_port,
                state: self.state,
                seq_delta: self.seq_delta,
                proxy: self.proxy_shift,
            },
            FlowCold {
                backend_addr: self.backend_addr,
                created_ns: self.created_ns,
                reply_key: self.reply_key,
                proxy: self.proxy,
            },
        )
    }

    fn join(h: &FlowHot, c: &FlowCold) -> Flow {
        Flow {
            service: h.service,
            backend: h.backend,
            generation: h.generation,
            backend_addr: c.backend_addr,
            snat_port: h.snat_port,
            state: h.state,
            created_ns: c.created_ns,
            last_seen_ns: h.last_seen_ns,
            reply_key: c.reply_key,
            seq_delta: h.seq_delta,
            proxy_shift: h.proxy,
            proxy: c.proxy,
        }
    }
}

/// A 5-tuple packed into five words: source and destination address as 128 bits each (IPv4
/// in the low 32), then ports, protocol and family. Equality is five integer compares and
/// the hash one multiply-mix per word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct PackedKey([u64; 5]);

#[inline(always)]
fn addr_words(a: IpAddr) -> (u64, u64, u64) {
    match a {
        IpAddr::V4(v4) => (0, u32::from(v4) as u64, 0),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            ((x >> 64) as u64, x as u64, 1)
        }
    }
}

impl PackedKey {
    #[inline(always)]
    pub fn of(k: &FlowKey) -> PackedKey {
        let (s0, s1, v6) = addr_words(k.src);
        let (d0, d1, _) = addr_words(k.dst);
        PackedKey([
            s0,
            s1,
            d0,
            d1,
            (k.src_port as u64) << 48 | (k.dst_port as u64) << 32 | (k.proto as u64) << 8 | v6,
        ])
    }

    /// The key of an IPv4 5-tuple, from its addresses' words: what [`PackedKey::of`] makes of
    /// the same tuple as a [`FlowKey`].
    #[inline(always)]
    pub fn v4(src: u32, dst: u32, src_port: u16, dst_port: u16, proto: u8) -> PackedKey {
        PackedKey([
            0,
            src as u64,
            0,
            dst as u64,
            (src_port as u64) << 48 | (dst_port as u64) << 32 | (proto as u64) << 8,
        ])
    }

    pub fn unpack(&self) -> FlowKey {
        let w = &self.0;
        let addr = |hi: u64, lo: u64| {
            if w[4] & 1 == 1 {
                IpAddr::V6(Ipv6Addr::from((hi as u128) << 64 | lo as u128))
            } else {
                IpAddr::V4(Ipv4Addr::from(lo as u32))
            }
        };
        FlowKey {
            src: addr(w[0], w[1]),
            dst: addr(w[2], w[3]),
            src_port: (w[4] >> 48) as u16,
            dst_port: (w[4] >> 32) as u16,
            proto: (w[4] >> 8) as u8,
        }
    }

    /// Keyed by `seed`, which each table draws at random: clients choose their tuples, and
    /// with a hash they could compute they would choose tuples that share a bucket and build
    /// long probe chains. The seed's two words enter both multiplies (so which addresses
    /// collide changes with it) and the finaliser. Unlike [`FlowKey::stable_hash`], this is
    /// local to one table.
    #[inline(always)]
    pub fn hash(&self, seed: [u64; 2]) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let w = &self.0;
        let a = (w[0] ^ w[1].rotate_left(29) ^ seed[0]).wrapping_mul(K);
        let b = (w[2] ^ w[3].rotate_left(29) ^ seed[1]).wrapping_mul(K);
        mix64(a ^ b.rotate_left(31) ^ w[4] ^ seed[0].rotate_left(32))
    }
}

impl PackedKey {
    /// Written over a freed slot's key. No real key has it: the last word's low byte is 0
    /// or 1 (the address family).
    pub const FREE: PackedKey = PackedKey([0, 0, 0, 0, u64::MAX]);

    /// Equality as one branch over the xor of every word (derived `==` on the array calls
    /// `memcmp`).
    #[inline(always)]
    fn same(&self, o: &PackedKey) -> bool {
        let (a, b) = (&self.0, &o.0);
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

/// A live flow's slot, as [`ConnTrack::find_live_from`] found it, with a copy of its hot part
/// as it was then; good until the table next changes (the caller reads and refreshes it
/// before doing anything else to the table). The copy is what the lookup read anyway: handing
/// it out saves reading (and bounds-checking) the slot a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveFlow {
    id: u32,
    pub hot: FlowHot,
}

/// The slot a key's lookup tries first, found in burst stage two: a slot holds a key if and
/// only if the index files that key under it (freed and refused slots hold
/// [`PackedKey::FREE`]), so a candidate holding the key is the key's slot, whatever the
/// burst inserted or evicted since; one that does not is probed for as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate(u32);

impl Candidate {
    pub const NONE: Candidate = Candidate(u32::MAX);
}

/// Why [`ConnTrack::find_live_from`] found no live flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Absent,
    /// Tracked, but idle past its timeout or closed and reopened by a SYN: the insert that
    /// follows restarts the entry in place.
    Stale,
}

/// One tracked flow in the dense slab: exactly one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    key: PackedKey,
    hot: FlowHot,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// A tracked flow found by [`ConnTrack::lookup`]: its hot part to read and update in place,
/// and its cold part on demand.
pub struct Tracked<'a> {
    pub hot: &'a mut FlowHot,
    /// Read only on the rare paths (a configuration change, the SYN proxy's handshake), so a
    /// packet of an established flow does not load its line.
    pub cold: &'a mut FlowCold,
}

impl Tracked<'_> {
    pub fn backend_addr(&self) -> SocketAddr {
        self.cold.backend_addr
    }
}

impl std::ops::Deref for Tracked<'_> {
    type Target = FlowHot;
    fn deref(&self) -> &FlowHot {
        self.hot
    }
}

/// Conntrack counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnTrackCounters {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub expiries: u64,
    /// Tracked flows found idle past their timeout on lookup and started afresh.
    pub restarts: u64,
    /// New flows not tracked because every bucket their probe may use was full (see
    /// [`crate::flowindex::MAX_PROBE`]); their packets are still forwarded.
    pub refused: u64,
    /// Half-open flows evicted to make room (for another half-open flow past the share, or
    /// in a full table); `evictions` counts the others.
    pub half_open_evictions: u64,
}

/// What [`ConnTrack::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inserted {
    /// The flow that left the table to make room, or was replaced.
    pub gone: Option<(FlowKey, Flow)>,
    /// False when the flow could not be indexed (counted as `refused`).
    pub tracked: bool,
}

impl ConnTrackCounters {
    pub fn merge(&mut self, o: &ConnTrackCounters) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.inserts += o.inserts;
        self.evictions += o.evictions;
        self.expiries += o.expiries;
        self.restarts += o.restarts;
        self.refused += o.refused;
        self.half_open_evictions += o.half_open_evictions;
    }
}

pub struct ConnTrack {
    /// Forward key -> slot id, in 64-byte buckets of eight ids, so a large, mostly empty
    /// table stays compact and a lookup's first line can be prefetched; the flows themselves
    /// live densely in `slots`.
    index: FlowIndex,
    /// Reply key -> slot id, for NAT and SNAT replies.
    replies: FlowIndex,
    /// Flows, packed at the front: freed slots are reused before the slab grows.
    slots: Vec<Slot>,
    /// The cold half of each slot, same ids.
    cold: Vec<FlowCold>,
    /// Free slot ids.
    free: Vec<u32>,
    /// Every live slot id once, in CLOCK order: on this ring, or, for flows inserted as
    /// half-open, on `half_open` (until the walk of that ring finds them established).
    ring: VecDeque<u32>,
    half_open: VecDeque<u32>,
    /// The most entries `half_open` holds.
    half_open_capacity: usize,
    capacity: usize,
    /// Idle timeouts, indexed by [`FlowState`] (its discriminant: see [`timeout_of`]).
    timeouts_ns: [u64; 5],
    /// Keys [`PackedKey::hash`] for both indexes.
    seed: [u64; 2],
    /// The last key a lookup found absent, and its hash ([`PackedKey::FREE`] for none): the
    /// insert that usually follows (a new flow) then neither hashes it again nor probes the
    /// index for it. Only an insert can make an absent key present, and every insert clears
    /// this, so while it is set the key is still absent.
    absent: (PackedKey, u64),
    pub counters: ConnTrackCounters,
}

/// A random seed for one table's hash (std's `RandomState` is seeded from the OS).
fn random_seed() -> [u64; 2] {
    use std::hash::{BuildHasher, Hasher};
    let s = std::collections::hash_map::RandomState::new();
    let word = |i: u64| {
        let mut h = s.build_hasher();
        h.write_u64(i);
        h.finish()
    };
    [word(0x5eed), word(0x5eed + 1)]
}

impl ConnTrack {
    /// Reserves room for `t.capacity` flows (and as many reply keys) now.
    pub fn new(t: &Timeouts) -> Self {
        let cap = t.capacity.max(1);
        let s = 1_000_000_000u64;
        ConnTrack {
            index: FlowIndex::with_capacity(cap),
            replies: FlowIndex::with_capacity(cap),
            slots: Vec::with_capacity(cap),
            cold: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            ring: VecDeque::with_capacity(cap),
            half_open: VecDeque::with_capacity(cap),
            half_open_capacity: half_open_capacity(cap, t.half_open_percent),
            capacity: cap,
            timeouts_ns: [
                t.tcp_syn_timeout * s,
                t.tcp_syn_timeout * s,
                t.tcp_established_timeout * s,
                t.tcp_closing_timeout * s,
                t.udp_timeout * s,
            ],
            seed: random_seed(),
            absent: (PackedKey::FREE, 0),
            counters: ConnTrackCounters::default(),
        }
    }

    #[inline(always)]
    fn hash_key(&self, k: &FlowKey) -> u64 {
        PackedKey::of(k).hash(self.seed)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries on the half-open ring (flows inserted as a SYN, less those whose handshake
    /// completed and have moved off it), and the most it holds.
    pub fn half_open(&self) -> (usize, usize) {
        (self.half_open.len(), self.half_open_capacity)
    }

    #[inline(always)]
    fn expired(&self, last_seen_ns: u64, s: FlowState, now: u64) -> bool {
        now.saturating_sub(last_seen_ns) > timeout_of(&self.timeouts_ns, s)
    }

    /// True when the flow has been idle past its state's timeout at `now`.
    pub fn is_expired(&self, f: &Flow, now: u64) -> bool {
        self.expired(f.last_seen_ns, f.state, now)
    }

    /// The hash the index files `key` under.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hash_key(key)
    }

    /// The hash the index files the packed key `key` under (the same as [`ConnTrack::hash`]
    /// of the key it packs).
    #[inline(always)]
    pub fn hash_packed(&self, key: &PackedKey) -> u64 {
        key.hash(self.seed)
    }

    /// Starts loading the index bucket a lookup of `hash` reads (burst stage one).
    #[inline]
    pub fn prefetch_index(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Starts loading the slot of the first entry of `hash`'s home bucket whose tag matches
    /// (burst stage two), and returns that slot as the lookup's [`Candidate`]. It compares
    /// tags only: comparing the key would read the very slot being prefetched and stall on
    /// it. A tag collision (about 1 in 8,000 per entry) merely wastes the prefetch.
    #[inline(always)]
    pub fn prefetch_flow(&self, hash: u64) -> Candidate {
        match self.index.first_in_home(hash) {
            Some(i) => {
                if let Some(s) = self.slots.get(i as usize) {
                    prefetch_read(s as *const Slot as *const u8);
                }
                Candidate(i)
            }
            None => Candidate::NONE,
        }
    }

    /// Starts loading the slots the next sweep of `budget` entries will examine: ring order
    /// is not memory order, so without this each examined flow is a cache miss at the end of
    /// the burst.
    #[inline]
    pub fn prefetch_sweep(&self, budget: usize) {
        let (a, b) = front_of(&self.ring, budget);
        a.iter().chain(b).for_each(|&id| {
            if let Some(s) = self.slots.get(id as usize) {
                prefetch_read(s as *const Slot as *const u8);
            }
        });
    }

    /// The slot id tracking `key` (filed under `hash`), if any.
    #[inline]
    fn find(&self, key: &PackedKey, hash: u64) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |i| {
            slots.get(i as usize).is_some_and(|s| s.key.same(key))
        })
    }

    /// The slot id whose reply key is `reply`, if any.
    #[inline]
    fn find_reply(&self, reply: &FlowKey) -> Option<u32> {
        let cold = &self.cold;
        self.replies.find(self.hash_key(reply), |i| {
            cold.get(i as usize)
                .is_some_and(|c| c.reply_key.as_ref() == Some(reply))
        })
    }

    /// Looks up a live flow and refreshes it with the packet's TCP flags. An entry idle past
    /// its timeout, or a closed TCP flow that a fresh SYN reopens, is reported as a miss so the
    /// caller chooses again and calls [`ConnTrack::insert`], which reuses the slot.
    #[inline]
    pub fn lookup(
        &mut self,
        key: &FlowKey,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Option<Tracked<'_>> {
        self.lookup_hashed(key, self.hash_key(key), tcp_flags, now)
    }

    /// [`ConnTrack::lookup`] with the key's hash already computed (by [`ConnTrack::hash`]).
    #[inline]
    pub fn lookup_hashed(
        &mut self,
        key: &FlowKey,
        hash: u64,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Option<Tracked<'_>> {
        self.lookup_from(Candidate::NONE, key, hash, tcp_flags, now)
    }

    /// [`ConnTrack::lookup_hashed`] trying the slot `candidate` first.
    #[inline]
    pub fn lookup_from(
        &mut self,
        candidate: Candidate,
        key: &FlowKey,
        hash: u64,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Option<Tracked<'_>> {
        let packed = PackedKey::of(key);
        debug_assert_eq!(hash, packed.hash(self.seed), "a lookup's hash is its key's");
        match self.find_live_from(candidate, &packed, hash, tcp_flags, now) {
            Ok(id) => self.refresh(id, tcp_flags, now),
            Err(m) => {
                self.counters.misses += 1;
                self.counters.restarts += (m == Miss::Stale) as u64;
                if m == Miss::Absent {
                    self.absent = (packed, hash);
                }
                None
            }
        }
    }

    /// The slot of the live flow `key` (filed under `hash`), trying the slot `candidate`
    /// first ([`Candidate::NONE`]: none), changing nothing: [`Miss::Absent`] if it is not
    /// tracked, or [`Miss::Stale`]. Counts nothing: read the flow's hot part from the
    /// [`LiveFlow`], then [`ConnTrack::refresh`] (or [`ConnTrack::hit`]) to take the packet,
    /// or leave it for a [`ConnTrack::lookup`] to count.
    #[inline(always)]
    pub fn find_live_from(
        &self,
        candidate: Candidate,
        key: &PackedKey,
        hash: u64,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Result<LiveFlow, Miss> {
        let id = match self.slots.get(candidate.0 as usize) {
            Some(s) if s.key.same(key) => candidate.0,
            _ => self.find(key, hash).ok_or(Miss::Absent)?,
        };
        let f = self.slots.get(id as usize).ok_or(Miss::Absent)?.hot;
        let reopened = f.state == FlowState::TcpClosing
            && tcp_flags
                .is_some_and(|fl| fl & (packet::tcp::SYN | packet::tcp::ACK) == packet::tcp::SYN);
        if now.saturating_sub(f.last_seen_ns) > timeout_of(&self.timeouts_ns, f.state) || reopened {
            return Err(Miss::Stale);
        }
        Ok(LiveFlow { id, hot: f })
    }

    /// [`ConnTrack::refresh`] for a caller that needs only the flow's hot part (the express
    /// lane, which read it from the [`LiveFlow`]): the flow's cold part is not touched.
    #[inline(always)]
    pub fn hit(&mut self, live: &LiveFlow, tcp_flags: Option<u8>, now: u64) -> Option<()> {
        let f = &mut self.slots.get_mut(live.id as usize)?.hot;
        self.counters.hits += 1;
        f.last_seen_ns = live.hot.last_seen_ns.max(now);
        if let Some(fl) = tcp_flags {
            f.state = next_state(live.hot.state, fl);
        }
        Some(())
    }

    /// Takes a packet (with `tcp_flags`, at `now`) on the flow [`ConnTrack::find_live_from`]
    /// found: a hit, its idle time restarted, its TCP state moved on.
    #[inline(always)]
    pub fn refresh(
        &mut self,
        live: LiveFlow,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Option<Tracked<'_>> {
        let slot = self.slots.get_mut(live.id as usize)?;
        let cold = self.cold.get_mut(live.id as usize)?;
        self.counters.hits += 1;
        let f = &mut slot.hot;
        f.last_seen_ns = f.last_seen_ns.max(now);
        if let Some(fl) = tcp_flags {
            f.state = next_state(f.state, fl);
        }
        Some(Tracked { hot: f, cold })
    }

    /// The whole flow in slot `id`.
    fn flow(&self, id: u32) -> Flow {
        Flow::join(&self.slots[id as usize].hot, &self.cold[id as usize])
    }

    /// Looks up the flow a reply belongs to, refreshing it: its forward key, and the flow in
    /// place.
    pub fn lookup_reply(
        &mut self,
        reply: &FlowKey,
        tcp_flags: Option<u8>,
        now: u64,
    ) -> Option<(FlowKey, Tracked<'_>)> {
        let id = self.find_reply(reply)?;
        let timeouts = self.timeouts_ns;
        let (slot, cold) = (
            self.slots.get_mut(id as usize)?,
            self.cold.get_mut(id as usize)?,
        );
        let f = &mut slot.hot;
        if now.saturating_sub(f.last_seen_ns) > timeout_of(&timeouts, f.state) {
            return None;
        }
        f.last_seen_ns = f.last_seen_ns.max(now);
        if let Some(fl) = tcp_flags {
            if fl & (packet::tcp::FIN | packet::tcp::RST) != 0 {
                f.state = FlowState::TcpClosing;
            }
        }
        let key = slot.key.unpack();
        Some((key, Tracked { hot: f, cold }))
    }

    /// The SYN proxy's handshake record of flow `key`, to change in place.
    pub fn proxy_handshake_mut(&mut self, key: &FlowKey) -> Option<&mut ProxyHandshake> {
        let id = self.find(&PackedKey::of(key), self.hash_key(key))?;
        self.cold.get_mut(id as usize).map(|c| &mut c.proxy)
    }

    /// Read-only lookup (ICMP steering), which neither refreshes nor counts.
    pub fn peek(&self, key: &FlowKey) -> Option<Flow> {
        self.find(&PackedKey::of(key), self.hash_key(key))
            .map(|id| self.flow(id))
    }

    /// True when a reply key is already taken (SNAT port selection).
    pub fn reply_key_in_use(&self, reply: &FlowKey) -> bool {
        self.find_reply(reply).is_some()
    }

    /// Indexes slot `id`'s reply key, if it has one; false if the reply index had no room.
    fn index_reply(&mut self, id: u32) -> bool {
        match self.cold[id as usize].reply_key {
            Some(r) => {
                let h = self.hash_key(&r);
                self.replies.insert(h, id)
            }
            None => true,
        }
    }

    fn unindex_reply(&mut self, id: u32) {
        if let Some(r) = self.cold[id as usize].reply_key {
            let h = self.hash_key(&r);
            self.replies.remove(h, id);
        }
    }

    /// Tracks a new flow (or restarts an existing entry in place). Evicts first if full.
    /// Says which flow left the table to make room or was replaced, if any, and whether the
    /// new one is tracked.
    pub fn insert(&mut self, key: FlowKey, flow: Flow, now: u64) -> Inserted {
        let packed = PackedKey::of(&key);
        let (absent, remembered) = std::mem::replace(&mut self.absent, (PackedKey::FREE, 0));
        let (hash, present) = if absent.same(&packed) {
            (remembered, None)
        } else {
            let hash = packed.hash(self.seed);
            (hash, self.find(&packed, hash))
        };
        let Some(id) = present else {
            return self.insert_absent(packed, hash, flow, now);
        };
        let (hot, cold) = flow.split();
        self.unindex_reply(id);
        let gone = Some((key, self.flow(id)));
        self.slots[id as usize].hot = hot;
        self.cold[id as usize] = cold;
        if !self.index_reply(id) {
            // Its reply could not be found: forget the flow rather than half-track it.
            self.index.remove(hash, id);
            self.slots[id as usize].key = PackedKey::FREE;
            if let Some(pos) = self.ring.iter().position(|&r| r == id) {
                self.ring.remove(pos);
            } else if let Some(pos) = self.half_open.iter().position(|&r| r == id) {
                self.half_open.remove(pos);
            }
            return self.refuse(id, gone);
        }
        self.counters.inserts += 1;
        Inserted {
            gone,
            tracked: true,
        }
    }

    /// [`ConnTrack::lookup_from`]'s miss and [`ConnTrack::insert`] in one, for a key
    /// [`ConnTrack::find_live_from`] has just reported [`Miss::Absent`] (filed under `hash`),
    /// with nothing inserted since: the express lane placing a new flow. Counts the miss the
    /// general path's lookup would have counted, then files the flow without probing for
    /// the key again.
    #[inline(always)]
    pub fn file_after_miss(&mut self, key: PackedKey, hash: u64, flow: Flow, now: u64) -> Inserted {
        debug_assert!(self.find(&key, hash).is_none(), "the key is absent");
        self.counters.misses += 1;
        self.absent = (PackedKey::FREE, 0);
        self.insert_absent(key, hash, flow, now)
    }

    /// Files `flow` under `packed` (hash `hash`), a key the table does not hold.
    #[inline(always)]
    fn insert_absent(&mut self, packed: PackedKey, hash: u64, flow: Flow, now: u64) -> Inserted {
        let mut gone = None;
        let (hot, cold) = flow.split();
        let half_open = flow.state.is_half_open();
        if half_open && self.half_open.len() >= self.half_open_capacity {
            gone = self.evict_half_open(now);
        }
        if self.index.len() >= self.capacity {
            gone = self.evict_half_open(now).or_else(|| self.evict_one(now));
        }
        let slot = Slot { key: packed, hot };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                self.cold[id as usize] = cold;
                id
            }
            None => {
                self.slots.push(slot);
                self.cold.push(cold);
                (self.slots.len() - 1) as u32
            }
        };
        if !self.index.insert(hash, id) {
            return self.refuse(id, gone);
        }
        if !self.index_reply(id) {
            self.index.remove(hash, id);
            return self.refuse(id, gone);
        }
        if half_open {
            self.half_open.push_back(id);
        } else {
            self.ring.push_back(id);
        }
        self.counters.inserts += 1;
        Inserted {
            gone,
            tracked: true,
        }
    }

    /// Gives back slot `id`, which an insert could not index (off both rings and indexes
    /// already), and reports the flow as not tracked.
    #[cold]
    fn refuse(&mut self, id: u32, gone: Option<(FlowKey, Flow)>) -> Inserted {
        self.slots[id as usize].key = PackedKey::FREE;
        self.free.push(id);
        self.counters.refused += 1;
        Inserted {
            gone,
            tracked: false,
        }
    }

    /// Forgets slot `id` (already taken off the ring), returning its key and flow.
    fn remove(&mut self, id: u32) -> (FlowKey, Flow) {
        self.unindex_reply(id);
        let packed = self.slots[id as usize].key;
        self.index.remove(packed.hash(self.seed), id);
        self.slots[id as usize].key = PackedKey::FREE;
        self.free.push(id);
        (packed.unpack(), self.flow(id))
    }

    /// Evicts the oldest half-open flow (an expired one counts as an expiry), moving the
    /// established flows it passes at the front of the half-open ring to the main ring. None
    /// if a bounded walk found no half-open flow.
    fn evict_half_open(&mut self, now: u64) -> Option<(FlowKey, Flow)> {
        for _ in 0..4 * EVICT_SCAN {
            let id = self.half_open.pop_front()?;
            let f = &self.slots[id as usize].hot;
            if !f.state.is_half_open() {
                self.ring.push_back(id);
                continue;
            }
            let expired = self.expired(f.last_seen_ns, f.state, now);
            let gone = self.remove(id);
            if expired {
                self.counters.expiries += 1;
            } else {
                self.counters.half_open_evictions += 1;
            }
            return Some(gone);
        }
        None
    }

    fn evict_one(&mut self, now: u64) -> Option<(FlowKey, Flow)> {
        // (ring position, last seen, expired)
        let mut victim: Option<(usize, u64, bool)> = None;
        for i in 0..EVICT_SCAN.min(self.ring.len()) {
            let Some(&id) = self.ring.get(i) else {
                continue;
            };
            let f = &self.slots[id as usize].hot;
            if self.expired(f.last_seen_ns, f.state, now) {
                victim = Some((i, f.last_seen_ns, true));
                break;
            }
            if victim.is_none_or(|(_, seen, _)| f.last_seen_ns < seen) {
                victim = Some((i, f.last_seen_ns, false));
            }
        }
        let (i, _, expired) = victim?;
        // Entries scanned ahead of the victim go to the back, as a sweep would move them.
        for _ in 0..i {
            if let Some(k) = self.ring.pop_front() {
                self.ring.push_back(k);
            }
        }
        let id = self.ring.pop_front()?;
        let gone = self.remove(id);
        if expired {
            self.counters.expiries += 1;
        } else {
            self.counters.evictions += 1;
        }
        Some(gone)
    }

    /// Examines up to `budget` ring entries: expired flows are removed, live ones rotate to
    /// the back; `gone` sees each flow removed. Called once per burst.
    pub fn sweep(&mut self, now: u64, budget: usize, mut gone: impl FnMut(&FlowKey, &Flow)) {
        // The half-open ring in insertion order: expired flows leave, established ones move
        // to the main ring, and the walk stops at the first live half-open flow (all behind
        // it are younger).
        for _ in 0..budget.min(self.half_open.len()) {
            let Some(&id) = self.half_open.front() else {
                break;
            };
            let f = &self.slots[id as usize].hot;
            if !f.state.is_half_open() {
                self.half_open.pop_front();
                self.ring.push_back(id);
            } else if self.expired(f.last_seen_ns, f.state, now) {
                self.half_open.pop_front();
                let (key, flow) = self.remove(id);
                self.counters.expiries += 1;
                gone(&key, &flow);
            } else {
                break;
            }
        }
        let budget = budget.min(self.ring.len());
        // Most sweeps find nothing expired: then the examined entries go to the back in one
        // rotation rather than one pop and push each. A flow is expired when last seen
        // before its state's cutoff (`expired`'s test, with the subtraction done once per
        // state rather than once per flow).
        let cutoffs = self.timeouts_ns.map(|t| now.saturating_sub(t));
        let (a, b) = front_of(&self.ring, budget);
        let none_expired = a.iter().chain(b).all(|&id| {
            self.slots
                .get(id as usize)
                .is_some_and(|s| s.hot.last_seen_ns >= cutoff_of(&cutoffs, s.hot.state))
        });
        if none_expired {
            self.ring.rotate_left(budget);
            return;
        }
        for _ in 0..budget {
            let Some(id) = self.ring.pop_front() else {
                return;
            };
            let f = &self.slots[id as usize].hot;
            if self.expired(f.last_seen_ns, f.state, now) {
                let (key, flow) = self.remove(id);
                self.counters.expiries += 1;
                gone(&key, &flow);
            } else {
                self.ring.push_back(id);
            }
        }
    }

    /// Visits the tracked flows in slots `from..` in slab order, at most `budget` slots, while
    /// `visit` returns true. Returns where to resume: the slab's length once every slot has
    /// been seen. Slot ids do not move, so a scan resumed after more bursts sees every flow
    /// that lived throughout exactly once.
    pub fn scan(
        &self,
        from: usize,
        budget: usize,
        mut visit: impl FnMut(FlowKey, Flow) -> bool,
    ) -> usize {
        let end = self.slots.len().min(from.saturating_add(budget));
        for id in from..end {
            let key = self.slots[id].key;
            if key.same(&PackedKey::FREE) {
                continue;
            }
            if !visit(key.unpack(), self.flow(id as u32)) {
                return id + 1;
            }
        }
        end
    }

    /// Bytes this table reserved at start (slab, cold half, free list, CLOCK ring and both
    /// indexes): what `[conntrack].capacity` costs per worker.
    pub fn reserved_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.cold.capacity() * std::mem::size_of::<FlowCold>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + (self.ring.capacity() + self.half_open.capacity()) * std::mem::size_of::<u32>()
            + self.index.reserved_bytes()
            + self.replies.reserved_bytes()
    }

    /// Slots in the slab (live or free): where a [`ConnTrack::scan`] ends.
    pub fn slab_len(&self) -> usize {
        self.slots.len()
    }

    /// Every tracked flow (for tools and tests).
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, Flow)> + '_ {
        self.ring
            .iter()
            .chain(self.half_open.iter())
            .map(|&id| (self.slots[id as usize].key.unpack(), self.flow(id)))
    }
}

/// The most half-open flows a table of `capacity` flows holds at `percent`.
pub fn half_open_capacity(capacity: usize, percent: u32) -> usize {
    (capacity * percent as usize)
        .div_ceil(100)
        .clamp(1, capacity.max(1))
}

/// The idle timeout for a state, from the [syn, established, closing, udp] table.
/// The idle timeout of a flow in state `s`: the state's discriminant is its index (a table
/// per state rather than a match, which cost a lookup of its own on every packet).
#[inline(always)]
fn timeout_of(t: &[u64; 5], s: FlowState) -> u64 {
    const _: () =
        assert!(FlowState::TcpSyn as usize == 0 && FlowState::TcpProxyOpening as usize == 1);
    const _: () =
        assert!(FlowState::TcpEstablished as usize == 2 && FlowState::TcpClosing as usize == 3);
    const _: () = assert!(FlowState::Udp as usize == 4);
    t[s as usize]
}

/// The cutoff for state `s` from the per-state cutoffs `now - timeout` (saturating): a flow
/// last seen before it is idle past its timeout, as [`ConnTrack::is_expired`] decides
/// (`now - last > t` exactly when `last < now - t`, and never while `now < t`).
#[inline(always)]
fn cutoff_of(c: &[u64; 5], s: FlowState) -> u64 {
    timeout_of(c, s)
}

/// The first `n` ids of `ring` (all of them if it is shorter) as its two slices: a walk of
/// them is two plain loops, where the deque's own iterator tests which half it is in at
/// every step.
#[inline(always)]
fn front_of(ring: &VecDeque<u32>, n: usize) -> (&[u32], &[u32]) {
    let (a, b) = ring.as_slices();
    let na = n.min(a.len());
    let nb = (n - na).min(b.len());
    (&a[..na], &b[..nb])
}

/// The TCP state after a packet with `flags` from the client.
pub fn next_state(s: FlowState, flags: u8) -> FlowState {
    use packet::tcp::{ACK, FIN, RST, SYN};
    if s == FlowState::Udp {
        return s;
    }
    if flags & (FIN | RST) != 0 {
        FlowState::TcpClosing
    } else if s == FlowState::TcpSyn && flags & ACK != 0 && flags & SYN == 0 {
        // (A proxied flow opening leaves its state when the backend's SYN-ACK arrives.)
        FlowState::TcpEstablished
    } else {
        s
    }
}

/// The state of a flow created by a packet with `tcp_flags` (None for UDP).
pub fn initial_state(tcp_flags: Option<u8>) -> FlowState {
    match tcp_flags {
        None => FlowState::Udp,
        Some(f) if f & packet::tcp::SYN != 0 && f & packet::tcp::ACK == 0 => FlowState::TcpSyn,
        Some(f) => next_state(FlowState::TcpEstablished, f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// Entries one probe of the index can reach from a home bucket.
    const MAX_PROBE_ENTRIES: usize = crate::flowindex::MAX_PROBE * 8;

    const S: u64 = 1_000_000_000;

    fn key(p: u16) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
            src_port: p,
            dst_port: 80,
            proto: 6,
        }
    }

    fn flow(now: u64, state: FlowState) -> Flow {
        Flow {
            service: 0,
            backend: 1,
            generation: 0,
            backend_addr: "10.1.0.1:8080".parse().unwrap(),
            snat_port: 0,
            state,
            created_ns: now,
            last_seen_ns: now,
            reply_key: None,
            seq_delta: 0,
            proxy_shift: Default::default(),
            proxy: Default::default(),
        }
    }

    fn ct(cap: usize) -> ConnTrack {
        ConnTrack::new(&Timeouts {
            capacity: cap,
            tcp_syn_timeout: 5,
            tcp_established_timeout: 100,
            tcp_closing_timeout: 10,
            udp_timeout: 30,
            half_open_percent: 25,
            rate_limit_sources: 64,
        })
    }

    /// A SYN flood fills only the half-open share: established flows stay, however many SYNs
    /// come, and the oldest half-open flows make room; a half-open flow whose handshake
    /// completes leaves the share (and is then kept like any established flow); with no
    /// half-open flow left, a full table evicts as before.
    #[test]
    fn half_open_flows_never_push_out_established_ones() {
        let mut t = ct(100);
        assert_eq!(t.half_open(), (0, 25));
        for p in 0..60 {
            t.insert(key(p), flow(0, FlowState::TcpEstablished), 0);
        }
        // 10,000 SYNs from as many sources.
        for p in 1000..11_000 {
            t.insert(key(p), flow(S, FlowState::TcpSyn), S);
        }
        assert_eq!(t.half_open(), (25, 25));
        assert_eq!(t.len(), 85);
        for p in 0..60 {
            assert!(t.peek(&key(p)).is_some(), "established flow {p} kept");
        }
        assert_eq!(t.counters.evictions, 0);
        assert_eq!(t.counters.half_open_evictions, 10_000 - 25);
        // The newest 25 SYNs are the ones tracked.
        assert!(t.peek(&key(10_999)).is_some() && t.peek(&key(10_974)).is_none());
        // One completes its handshake: established, it moves to the main ring when the
        // half-open ring's walk reaches it, and no SYN evicts it.
        assert!(t
            .lookup(&key(10_990), Some(packet::tcp::ACK), 2 * S)
            .is_some());
        t.sweep(2 * S, 64, |_, _| {});
        for p in 20_000..20_100 {
            t.insert(key(p), flow(3 * S, FlowState::TcpSyn), 3 * S);
        }
        assert!(t.peek(&key(10_990)).is_some());
        assert_eq!(
            t.half_open(),
            (25, 25),
            "SYNs only: the established one moved off"
        );
        assert_eq!(t.len(), 86);
        // Established flows fill the rest of the table: the half-open ones go first.
        for p in 100..130 {
            t.insert(key(p), flow(3 * S, FlowState::TcpEstablished), 3 * S);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.counters.evictions, 0, "no established flow evicted");
        assert_eq!(t.half_open().0, 25 - 16, "16 half-open flows made room");
        // Half-open flows expire on the SYN timeout (5 s here).
        t.sweep(9 * S, 100, |_, _| {});
        assert_eq!(t.half_open().0, 0);
        assert!(t.counters.expiries > 0);
        assert!(t.reserved_bytes() > 0);
    }

    /// The sweep's per-state cutoffs decide expiry exactly as `expired` does, at the
    /// boundaries too: `now` below a timeout, a flow last seen after `now`, one a nanosecond
    /// either side of its timeout.
    #[test]
    fn the_sweeps_cutoffs_agree_with_the_idle_test() {
        let c = ct(4);
        let states = [
            FlowState::TcpSyn,
            FlowState::TcpProxyOpening,
            FlowState::TcpEstablished,
            FlowState::TcpClosing,
            FlowState::Udp,
        ];
        let s = 1_000_000_000u64;
        let nows = [
            0,
            1,
            5 * s - 1,
            5 * s,
            5 * s + 1,
            31 * s,
            100 * s + 7,
            u64::MAX,
        ];
        for now in nows {
            let cutoffs = c.timeouts_ns.map(|t| now.saturating_sub(t));
            for st in states {
                let t = timeout_of(&c.timeouts_ns, st);
                let lasts = [0, 1, now, now.saturating_add(1), now.saturating_sub(t)];
                let near = [
                    now.saturating_sub(t).saturating_sub(1),
                    now.saturating_sub(t) + 1,
                ];
                for last in lasts.into_iter().chain(near) {
                    assert_eq!(
                        last < cutoff_of(&cutoffs, st),
                        c.expired(last, st, now),
                        "{st:?} last seen {last}, now {now}"
                    );
                }
            }
        }
    }

    #[test]
    fn timeouts_follow_tcp_state() {
        let mut t = ct(16);
        t.insert(key(1), flow(0, FlowState::TcpSyn), 0);
        assert!(t.lookup(&key(1), Some(packet::tcp::SYN), 4 * S).is_some());
        // 6 s idle after the last SYN: past the 5 s SYN timeout.
        assert!(t
            .lookup(&key(1), Some(packet::tcp::ACK), 10 * S + 1)
            .is_none());
        t.insert(key(2), flow(0, FlowState::TcpSyn), 0);
        let f = t.lookup(&key(2), Some(packet::tcp::ACK), S).unwrap();
        assert_eq!(f.state, FlowState::TcpEstablished);
        assert!(t.lookup(&key(2), Some(packet::tcp::ACK), 90 * S).is_some());
        assert_eq!(
            t.lookup(&key(2), Some(packet::tcp::FIN | packet::tcp::ACK), 91 * S)
                .unwrap()
                .state,
            FlowState::TcpClosing
        );
        assert!(t.lookup(&key(2), Some(packet::tcp::ACK), 102 * S).is_none());
        assert_eq!(t.counters.restarts, 2);
    }

    #[test]
    fn sweep_removes_only_expired() {
        let mut t = ct(16);
        for p in 0..10 {
            t.insert(key(p), flow(p as u64 * S, FlowState::Udp), p as u64 * S);
        }
        // At 35 s, flows last seen before 5 s are past the 30 s UDP timeout: ports 0..=4.
        let mut gone = Vec::new();
        t.sweep(35 * S, 100, |k, _| gone.push(k.src_port));
        assert_eq!(t.len(), 5);
        assert_eq!(t.counters.expiries, 5);
        gone.sort();
        assert_eq!(
            gone,
            [0, 1, 2, 3, 4],
            "the sweep reports each flow it removes"
        );
        assert!(t.peek(&key(4)).is_none() && t.peek(&key(5)).is_some());
    }

    /// A sweep that finds nothing expired moves what it examined to the back of the ring,
    /// as one that pops and pushes each entry would: the next sweeps see the rest first.
    #[test]
    fn a_sweep_without_expiries_rotates_the_ring() {
        let mut t = ct(16);
        for p in 0..10 {
            t.insert(key(p), flow(0, FlowState::Udp), 0);
        }
        t.sweep(S, 4, |_, _| panic!("nothing has expired at 1 s"));
        assert_eq!(t.len(), 10);
        let mut gone = Vec::new();
        t.sweep(100 * S, 6, |k, _| gone.push(k.src_port));
        assert_eq!(
            gone,
            [4, 5, 6, 7, 8, 9],
            "the unexamined entries come first"
        );
        t.sweep(100 * S, 6, |k, _| gone.push(k.src_port));
        assert_eq!(gone, [4, 5, 6, 7, 8, 9, 0, 1, 2, 3]);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_evicts_least_recent_without_growing() {
        let mut t = ct(4);
        for p in 0..4 {
            t.insert(key(p), flow(p as u64, FlowState::TcpEstablished), p as u64);
        }
        t.lookup(&key(0), Some(packet::tcp::ACK), 10);
        let gone = t
            .insert(key(9), flow(11, FlowState::TcpEstablished), 11)
            .gone;
        assert_eq!(
            gone.map(|(k, _)| k),
            Some(key(1)),
            "insert reports the evicted flow"
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.counters.evictions, 1);
        assert!(t.peek(&key(0)).is_some(), "recently seen flow kept");
        assert!(
            t.peek(&key(1)).is_none(),
            "least recently seen flow evicted"
        );
        for p in 100..1000 {
            t.insert(key(p), flow(p as u64, FlowState::TcpEstablished), p as u64);
            assert!(t.len() <= 4);
        }
    }

    #[test]
    fn reply_index_follows_flow_lifetime() {
        let mut t = ct(4);
        let r = key(7).reversed();
        t.insert(
            key(7),
            Flow {
                reply_key: Some(r),
                ..flow(0, FlowState::Udp)
            },
            0,
        );
        assert_eq!(t.lookup_reply(&r, None, S).map(|(k, _)| k), Some(key(7)));
        assert!(t.reply_key_in_use(&r));
        t.sweep(100 * S, 10, |_, _| {});
        assert!(!t.reply_key_in_use(&r) && t.lookup_reply(&r, None, 100 * S).is_none());
    }

    /// A flow the table refuses leaves no trace: it is not listed, and a lookup that tries
    /// its would-be slot first finds nothing there. (Here the reply index refuses it: 128
    /// flows whose reply keys share one hash fill every bucket a probe from its home may
    /// visit, which a table of 256 has room for.)
    #[test]
    fn a_refused_flow_leaves_its_slot_free() {
        let mut t = ct(256);
        let r = key(7).reversed();
        let with_reply = |now| Flow {
            reply_key: Some(r),
            ..flow(now, FlowState::Udp)
        };
        let probed = MAX_PROBE_ENTRIES as u16;
        for p in 0..probed {
            assert!(t.insert(key(p), with_reply(0), 0).tracked, "flow {p}");
        }
        let refused = t.insert(key(probed), with_reply(0), 0);
        assert!(!refused.tracked);
        assert_eq!(t.counters.refused, 1);
        let listed = t.iter().filter(|(k, _)| k.src_port == probed).count();
        assert_eq!(listed, 0, "the refused flow is not listed");
        let packed = PackedKey::of(&key(probed));
        let hash = t.hash_packed(&packed);
        for slot in 0..t.slab_len() as u32 + 1 {
            assert_eq!(
                t.find_live_from(Candidate(slot), &packed, hash, None, 0),
                Err(Miss::Absent),
                "slot {slot}"
            );
        }
        // And a tracked flow is found from its candidate and from a wrong one alike.
        let packed = PackedKey::of(&key(7));
        let hash = t.hash_packed(&packed);
        let c = t.prefetch_flow(hash);
        assert_ne!(c, Candidate::NONE);
        let found = t.find_live_from(c, &packed, hash, None, 0);
        assert!(found.is_ok());
        assert_eq!(
            t.find_live_from(Candidate(1), &packed, hash, None, 0),
            found
        );
    }

    /// The express lane packs IPv4 keys from raw words: the same key, hashed the same, as
    /// packing the `FlowKey` (else its lookups would all miss).
    #[test]
    fn packing_raw_ipv4_words_gives_the_flow_keys_packing() {
        let k = key(40000);
        let (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) = (k.src, k.dst) else {
            unreachable!()
        };
        let raw = PackedKey::v4(s.into(), d.into(), k.src_port, k.dst_port, k.proto);
        assert_eq!(raw, PackedKey::of(&k));
        let t = ct(8);
        assert_eq!(t.hash_packed(&raw), t.hash(&k));
    }

    #[test]
    fn packed_keys_round_trip_and_keep_families_apart() {
        let v6 = FlowKey {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::ffff:a".parse().unwrap(),
            src_port: 65535,
            dst_port: 443,
            proto: 17,
        };
        let mapped = FlowKey {
            src: "::ffff:203.0.113.1".parse().unwrap(),
            dst: "::ffff:198.51.100.10".parse().unwrap(),
            ..key(1)
        };
        for k in [key(1), key(65535), v6, mapped] {
            assert_eq!(PackedKey::of(&k).unpack(), k);
        }
        assert_ne!(PackedKey::of(&mapped), PackedKey::of(&key(1)));
        assert_ne!(
            PackedKey::of(&mapped).hash([7, 9]),
            PackedKey::of(&key(1)).hash([7, 9])
        );
        let mut t = ct(8);
        t.insert(key(1), flow(0, FlowState::Udp), 0);
        assert!(t.peek(&mapped).is_none() && t.peek(&key(1)).is_some());
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn hot_and_cold_halves_make_the_flow_inserted() {
        let mut t = ct(8);
        let f = Flow {
            snat_port: 4321,
            generation: 7,
            reply_key: Some(key(3).reversed()),
            ..flow(5, FlowState::TcpSyn)
        };
        t.insert(key(3), f, 5);
        assert_eq!(t.peek(&key(3)), Some(f));
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![(key(3), f)]);
        let hit = t.lookup(&key(3), Some(packet::tcp::ACK), 6).unwrap();
        assert_eq!(hit.backend_addr(), f.backend_addr);
        assert_eq!(
            (hit.state, hit.last_seen_ns),
            (FlowState::TcpEstablished, 6)
        );
    }

    /// An insert after a lookup's miss uses what the miss remembered only for that key, and
    /// only once: inserting another key, the same key again (a replacement), or a key after
    /// an unrelated insert all leave one findable entry per key.
    #[test]
    fn an_insert_after_a_miss_files_the_key_once() {
        let mut t = ct(64);
        let est = |now| flow(now, FlowState::TcpEstablished);
        assert!(t.lookup(&key(1), None, 0).is_none());
        assert!(t.insert(key(1), est(0), 0).tracked);
        // The same key again, with no lookup between: a replacement, not a second entry.
        let again = t.insert(key(1), est(1), 1);
        assert!(again.tracked && again.gone.is_some(), "replaced");
        assert_eq!(t.len(), 1);
        // A miss for key 2, then key 3 inserted: key 3 is hashed and filed as its own.
        assert!(t.lookup(&key(2), None, 1).is_none());
        assert!(t.insert(key(3), est(1), 1).tracked);
        // Key 2 was absent and still is: inserted after another insert, it is looked for
        // again (and not found), then filed.
        assert!(t.insert(key(2), est(1), 1).tracked);
        // A miss for key 4, key 4 inserted, and key 4 inserted again: replaced.
        assert!(t.lookup(&key(4), None, 1).is_none());
        assert!(t.insert(key(4), est(1), 1).tracked);
        assert!(t.insert(key(4), est(2), 2).gone.is_some());
        assert_eq!(t.len(), 4);
        for p in 1..=4 {
            assert!(t.lookup(&key(p), None, 2).is_some(), "key {p} is found");
            assert_eq!(
                t.iter().filter(|(k, _)| k.src_port == p).count(),
                1,
                "key {p} once"
            );
        }
    }

    #[test]
    fn syn_reopens_a_closed_flow() {
        let mut t = ct(4);
        t.insert(key(1), flow(0, FlowState::TcpClosing), 0);
        assert!(t.lookup(&key(1), Some(packet::tcp::ACK), S).is_some());
        assert!(t.lookup(&key(1), Some(packet::tcp::SYN), S).is_none());
    }

    /// Each table draws its own seed, so which tuples share a bucket cannot be worked out
    /// from outside (or carried from one table to another).
    #[test]
    fn every_table_hashes_with_a_seed_of_its_own() {
        let (a, b) = (ct(16), ct(16));
        assert_ne!(a.seed, b.seed);
        let differ = (0..64)
            .filter(|&p| a.hash(&key(p)) != b.hash(&key(p)))
            .count();
        assert_eq!(differ, 64);
        // Lookups agree with inserts whatever the seed.
        let mut t = ct(64);
        for p in 0..64 {
            assert!(t.insert(key(p), flow(0, FlowState::Udp), 0).tracked);
        }
        for p in 0..64 {
            assert!(t.peek(&key(p)).is_some(), "{p}");
        }
    }

    /// A scan resumed from the cursor it returned sees each live flow once and skips freed
    /// slots, however the budget cuts it.
    #[test]
    fn a_resumed_scan_sees_every_live_flow_once() {
        let mut t = ct(100);
        for p in 0..100 {
            t.insert(key(p), flow(p as u64 * S, FlowState::Udp), p as u64 * S);
        }
        // Expire the first 30 (UDP timeout 30 s, the sweep at 60 s sees p < 30 idle).
        t.sweep(60 * S, 100, |_, _| {});
        assert_eq!(t.len(), 70);
        for budget in [1, 7, 64, 1000] {
            let mut seen = Vec::new();
            let mut cursor = 0;
            let mut rounds = 0;
            while cursor < t.slab_len() {
                cursor = t.scan(cursor, budget, |k, _| {
                    seen.push(k.src_port);
                    true
                });
                rounds += 1;
            }
            seen.sort();
            assert_eq!(seen, (30..100).collect::<Vec<u16>>(), "budget {budget}");
            assert_eq!(rounds, 100usize.div_ceil(budget), "budget {budget}");
        }
        // A visitor that stops early resumes just after the flow it stopped at.
        let mut first = None;
        let next = t.scan(0, 1000, |k, _| {
            first = Some(k.src_port);
            false
        });
        let mut second = None;
        t.scan(next, 1000, |k, _| {
            second = Some(k.src_port);
            false
        });
        assert_ne!(first, second);
    }

    /// What a tracked flow costs, all structures counted: docs/architecture.md quotes it.
    #[test]
    fn a_tracked_flow_costs_under_220_bytes_of_reserved_memory() {
        for cap in [1000, 4096, 100_000, 262_144] {
            let t = ct(cap);
            let per = t.reserved_bytes() as f64 / cap as f64;
            eprintln!("capacity {cap}: {per:.0} bytes per flow");
            assert!(
                (150.0..220.0).contains(&per),
                "capacity {cap}: {per:.0} bytes per flow"
            );
        }
    }
}
