#!/usr/bin/env python3
"""Writes packaging/grafana/sluice-dashboard.json, the Grafana dashboard over sluice's
Prometheus metrics ([metrics] listen). Import it in Grafana (Dashboards > New > Import) and
pick the Prometheus data source that scrapes sluice; the `instance` variable selects one or
more balancers.

The dashboard is generated so its panels stay uniform; tests/control.rs and tests/e2e_l7.rs
check every query against the metrics a running sluice exports (names and labels).

    python3 packaging/grafana/make-dashboard.py > packaging/grafana/sluice-dashboard.json
"""

import json
import sys

SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"

panels = []
y = 0


def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False,
                   "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
    y += 1


def panel(title, targets, unit, kind="timeseries", w=12, h=8, x=0, description="",
          stack=False, mappings=None):
    """One panel; `targets` is a list of (expr, legend)."""
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": e, "legendFormat": l,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (e, l) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "table":
        for t in p["targets"]:
            t["format"] = "table"
            t["instant"] = True
    if mappings:
        p["fieldConfig"]["defaults"]["mappings"] = mappings
    panels.append(p)


def place(*specs):
    """Panels side by side on one row of the grid."""
    global y
    x = 0
    height = 0
    for title, targets, unit, kw in specs:
        w = kw.pop("w", 24 // len(specs))
        panel(title, targets, unit, w=w, x=x, **kw)
        x += w
        height = max(height, kw.get("h", 8))
    y += height


row("Traffic")
place(
    ("Packets/s", [
        (f"sum(rate(sluice_packets_received_total{{{SEL}}}[{RATE}]))", "received"),
        (f"sum(rate(sluice_packets_sent_total{{{SEL}}}[{RATE}]))", "sent"),
    ], "pps", {"description": "Frames received from and sent to the ports, all workers."}),
    ("Bits/s received", [
        (f"sum by (instance) (8 * rate(sluice_bytes_received_total{{{SEL}}}[{RATE}]))", "{{instance}}"),
    ], "bps", {}),
)
place(
    ("Packets/s per worker", [
        (f"rate(sluice_worker_packets_received_total{{{SEL}}}[{RATE}])", "{{instance}} worker {{worker}} in"),
        (f"rate(sluice_worker_packets_sent_total{{{SEL}}}[{RATE}])", "{{instance}} worker {{worker}} out"),
    ], "pps", {"description": "An uneven split is RSS (or one heavy flow); a worker near its "
               "ceiling while others idle is where packets will be lost first."}),
    ("Packets/s per service", [
        (f"sum by (service) (rate(sluice_service_packets_total{{{SEL}}}[{RATE}]))", "{{service}}"),
    ], "pps", {"stack": True}),
)
place(
    ("Bits/s per service", [
        (f"sum by (service) (8 * rate(sluice_service_bytes_total{{{SEL}}}[{RATE}]))", "{{service}}"),
    ], "bps", {"stack": True}),
    ("Packets/s per backend", [
        (f"sum by (service, backend) (rate(sluice_backend_packets_total{{{SEL}}}[{RATE}]))", "{{service}} {{backend}}"),
    ], "pps", {}),
)

row("Drops")
place(
    ("Drops/s by reason", [
        (f"sum by (reason) (rate(sluice_drops_total{{{SEL}}}[{RATE}])) > 0", "{{reason}}"),
    ], "pps", {"stack": True, "description": "Every dropped frame is counted by its reason "
               "(README: Drop reasons); not_ours is traffic for other hosts."}),
    ("Drops/s by worker and reason", [
        (f"sum by (worker, reason) (rate(sluice_worker_drops_total{{{SEL}}}[{RATE}])) > 0", "worker {{worker}} {{reason}}"),
    ], "pps", {}),
)
place(
    ("Rate limits and source-table churn", [
        (f"sum by (reason) (rate(sluice_drops_total{{{SEL},reason=~\"source_rate_limited|service_rate_limited|backend_full\"}}[{RATE}]))", "{{reason}}"),
        (f"sum(rate(sluice_rate_limit_sources_recycled_total{{{SEL}}}[{RATE}]))", "source slots recycled"),
    ], "pps", {"description": "New flows cut by per-source limits, packets by service limits, "
               "flows refused at max_flows; recycled slots rise with a flood of sources."}),
    ("Flows failed open (all backends down)", [
        (f"sum by (service) (rate(sluice_service_all_down_flows_total{{{SEL}}}[{RATE}]))", "{{service}}"),
    ], "ops", {}),
    ("SYN proxy", [
        (f"sum by (event) (rate(sluice_syn_proxy_events_total{{{SEL}}}[{RATE}]))", "{{event}}"),
        (f"sum by (reason) (rate(sluice_drops_total{{{SEL},reason=~\"syn_proxy_.*\"}}[{RATE}]))", "{{reason}}"),
    ], "pps", {"description": "cookie: SYNs answered with a SYN cookie (a flood shows here); "
               "accepted: ACKs that returned one (real clients); opened/refused: backends' "
               "answers to sluice's SYN; held: clients' first data held meanwhile."}),
    ("SYN proxy on (workers)", [
        (f"sum by (service) (sluice_syn_proxy_active_workers{{{SEL}}})", "{{service}}"),
    ], "short", {"description": "Workers answering a service's SYNs with cookies now: all of "
                 "them with syn_proxy = \"on\", those over syn_proxy_auto_on with \"auto\"."}),
    ("Drops/s for unresolved next hops", [
        (f"sum by (address) (rate(sluice_neighbour_unresolved_drops_total{{{SEL}}}[{RATE}]))", "{{address}}"),
    ], "pps", {}),
)

row("Connection tracking")
place(
    ("Conntrack occupancy", [
        (f"sum by (instance) (sluice_conntrack_flows{{{SEL}}}) / sum by (instance) (sluice_conntrack_capacity{{{SEL}}})", "{{instance}}"),
    ], "percentunit", {"description": "Tracked flows over the capacity reserved for them; near 1, "
                       "new flows evict the idlest (half-open first)."}),
    ("Tracked flows", [
        (f"sum(sluice_conntrack_flows{{{SEL}}})", "all"),
        (f"sum(sluice_conntrack_half_open_flows{{{SEL}}})", "half-open (SYN only)"),
    ], "short", {}),
    ("Evictions/s", [
        (f"sum by (kind) (rate(sluice_conntrack_evictions_total{{{SEL}}}[{RATE}]))", "{{kind}}"),
    ], "ops", {"description": "half_open: the SYN-flood share at work; other: established "
               "flows pushed out (the table is too small)."}),
)

row("Backends")
state_map = [{"type": "value", "options": {"1": {"text": "yes", "color": "green"},
                                            "0": {"text": "no", "color": "red"}}}]
place(
    ("Backend health", [
        (f"max by (service, backend, state) (sluice_backend_health_state{{{SEL}}}) == 1", ""),
    ], "short", {"kind": "table", "description": "up / down / unknown / unchecked per backend."}),
    ("Backend admin state", [
        (f"max by (service, backend, state) (sluice_backend_admin_state{{{SEL}}}) == 1", ""),
    ], "short", {"kind": "table", "description": "ready / drain / drain-expired / disabled."}),
)
place(
    ("Active flows per backend", [
        (f"sum by (service, backend) (sluice_backend_flows{{{SEL}}})", "{{service}} {{backend}}"),
    ], "short", {}),
    ("Health check latency", [
        (f"max by (service, backend) (sluice_backend_check_latency_seconds{{{SEL}}})", "{{service}} {{backend}}"),
    ], "s", {}),
)

row("Node and BGP")
place(
    ("Node state", [
        (f"max by (instance, state) (sluice_node_state{{{SEL}}}) == 1", ""),
    ], "short", {"kind": "table", "description": "active / drained / standby / stopping."}),
    ("VIP routes announced", [
        (f"max by (instance, prefix) (sluice_bgp_route_announced{{{SEL}}})", "{{instance}} {{prefix}}"),
    ], "short", {"mappings": state_map}),
    ("Next hops resolved by sluice", [
        (f"max by (instance, address) (sluice_neighbour_resolved{{{SEL}}})", "{{instance}} {{address}}"),
    ], "short", {"mappings": state_map}),
)

row("L7 pool (HTTP and TLS)")
place(
    ("Requests/s by status class", [
        (f"sum by (status_class) (rate(sluice_l7_requests_total{{{SEL}}}[{RATE}]))", "{{status_class}}"),
    ], "reqps", {"stack": True}),
    ("Request latency", [
        (f"histogram_quantile({q}, sum by (le) (rate(sluice_l7_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))", f"p{int(q * 100)}")
        for q in (0.5, 0.9, 0.99)
    ], "s", {"description": "From the request's first byte to the response's last, as the "
             "client sees it."}),
)
place(
    ("Requests/s per service and status class", [
        (f"sum by (service, status_class) (rate(sluice_l7_requests_total{{{SEL}}}[{RATE}]))", "{{service}} {{status_class}}"),
    ], "reqps", {}),
    ("L7 errors/s by reason", [
        (f"sum by (reason) (rate(sluice_l7_errors_total{{{SEL}}}[{RATE}])) > 0", "{{reason}}"),
    ], "ops", {}),
)
place(
    ("Connections", [
        (f"sum(sluice_l7_client_connections{{{SEL}}})", "from clients"),
        (f"sum(sluice_l7_upstream_connections{{{SEL}}})", "to backends"),
    ], "short", {}),
    ("Upstream connection reuse", [
        (f"sum(rate(sluice_l7_upstream_requests_total{{{SEL},connection=\"reused\"}}[{RATE}])) / sum(rate(sluice_l7_upstream_requests_total{{{SEL}}}[{RATE}]))", "reused"),
    ], "percentunit", {}),
    ("TLS handshakes/s", [
        (f"sum by (version) (rate(sluice_l7_tls_handshakes_total{{{SEL}}}[{RATE}]))", "TLS {{version}}"),
        (f"sum(rate(sluice_l7_tls_resumed_total{{{SEL}}}[{RATE}]))", "resumed"),
    ], "ops", {}),
)
place(
    ("Requests/s per pool backend", [
        (f"sum by (service, pool, backend) (rate(sluice_l7_backend_requests_total{{{SEL}}}[{RATE}]))", "{{service}} {{pool}} {{backend}}"),
    ], "reqps", {}),
    ("Certificate days left", [
        (f"min by (service, names) (sluice_l7_certificate_expiry_seconds{{{SEL}}}) / 86400", "{{service}} {{names}}"),
    ], "d", {"description": "Below 14 days: renew (sluicectl reload swaps the files live)."}),
)

dashboard = {
    "title": "sluice",
    "uid": "sluice-lb",
    "description": "sluice packet balancer: traffic, drops, conntrack, backends, node, L7 pool",
    "tags": ["sluice", "load balancer"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource",
         "query": "prometheus"},
        {"name": "instance", "label": "Balancer", "type": "query",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(sluice_packets_received_total, instance)",
                   "refId": "instance"},
         "definition": "label_values(sluice_packets_received_total, instance)",
         "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2},
    ]},
    "panels": panels,
}

json.dump(dashboard, sys.stdout, indent=2)
sys.stdout.write("\n")
