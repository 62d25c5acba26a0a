# What the topology scripts share (sourced, with $pfx set): running a command in one of the
# test's namespaces, and tearing every one of them down with whatever runs inside.
ns() { ip netns exec "$pfx-$1" "${@:2}"; }
down() {
  for n in $(ip netns list | awk '{print $1}' | grep "^$pfx-" || true); do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$n" 2>/dev/null || true
  done
}
