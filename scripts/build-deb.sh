#!/usr/bin/env bash
# Builds the Debian package target/debian/sluice_VERSION_ARCH.deb from this checkout:
# release builds of sluice and sluicectl, the systemd unit (packaging/sluice.service), the
# configuration the unit runs (packaging/sluice.toml, a conffile), the example configurations
# and sample capture, the Grafana dashboard, the XDP object, manual pages (sluice(1), sluicectl(1) and one per verb,
# from the clap definitions; sluice.toml(5) from README.md's configuration reference) and
# bash, zsh and fish completions. Dependencies are worked out by dpkg-shlibdeps from the
# libraries the binaries link (DPDK, libxdp, libbpf).
#
#   scripts/build-deb.sh            # prints the package's path on its last line
#   apt install ./target/debian/sluice_*.deb
#
# Needs what scripts/test.sh installs (a Rust toolchain, libdpdk-dev, libxdp-dev, clang) and
# dpkg-dev (part of build-essential).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages build-essential dpkg-dev pkg-config libdpdk-dev libclang-dev libxdp-dev libbpf-dev clang python3
ensure_rust

version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
arch=$(dpkg --print-architecture)
echo "== cargo build --release (sluice $version, $arch)"
cargo build --release --workspace --bins -q

root=target/debian/root
rm -rf target/debian
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/sluice" "$root/usr/lib/sluice" \
  "$root/usr/share/doc/sluice/examples" "$root/usr/share/man/man1" "$root/usr/share/man/man5" \
  "$root/lib/systemd/system" "$root/etc/sluice" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d"

install -m 0755 -s target/release/sluice target/release/sluicectl "$root/usr/bin/"
install -m 0644 packaging/sluice.service "$root/lib/systemd/system/sluice.service"
install -m 0644 packaging/sluice.toml "$root/etc/sluice/sluice.toml"
install -m 0644 examples/sample.pcap "$root/usr/share/sluice/sample.pcap"
install -D -m 0644 packaging/grafana/sluice-dashboard.json "$root/usr/share/sluice/grafana/sluice-dashboard.json"
install -m 0644 examples/*.toml "$root/usr/share/doc/sluice/examples/"
install -m 0644 README.md "$root/usr/share/doc/sluice/README.md"
install -m 0644 docs/*.md "$root/usr/share/doc/sluice/"
# The XDP program is embedded in sluice (loaded from memory); the object is shipped for
# inspection (`llvm-objdump -S`, `bpftool prog` after a start).
obj=$(ls -t target/release/build/xdp-sys-*/out/sluice_xdp.o | head -1)
install -m 0644 "$obj" "$root/usr/lib/sluice/sluice_xdp.o"

echo "== manual pages and completions"
man1=$(mktemp -d); trap 'rm -rf "$man1"' EXIT
target/release/sluice manual --out "$man1" >/dev/null
target/release/sluicectl manual --out "$man1" >/dev/null
python3 packaging/man-config.py README.md "$version" > "$man1/sluice.toml.5"
for f in "$man1"/*.1; do gzip -9n < "$f" > "$root/usr/share/man/man1/$(basename "$f").gz"; done
gzip -9n < "$man1/sluice.toml.5" > "$root/usr/share/man/man5/sluice.toml.5.gz"
for p in sluice sluicectl; do
  "target/release/$p" completions bash > "$root/usr/share/bash-completion/completions/$p"
  "target/release/$p" completions zsh > "$root/usr/share/zsh/vendor-completions/_$p"
  "target/release/$p" completions fish > "$root/usr/share/fish/vendor_completions.d/$p.fish"
done
gzip -9n < /dev/stdin > "$root/usr/share/doc/sluice/changelog.gz" <<EOF
sluice ($version) unstable; urgency=medium

  * Built from commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown).

 -- sluice developers <sluice@localhost>  $(date -R)
EOF
cat > "$root/usr/share/doc/sluice/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sluice
License: Apache-2.0

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF

echo "== control files"
# dpkg-shlibdeps wants a source tree: give it the smallest one.
shl=$(mktemp -d)
mkdir -p "$shl/debian"
printf 'Source: sluice\n\nPackage: sluice\nArchitecture: any\n' > "$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O "$OLDPWD/$root/usr/bin/sluice" "$OLDPWD/$root/usr/bin/sluicectl" 2>/dev/null \
  | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: sluice
Version: $version
Architecture: $arch
Maintainer: sluice developers <sluice@localhost>
Installed-Size: $installed_kb
Depends: $depends
Recommends: iproute2, ethtool
Suggests: exabgp, keepalived, dpdk
Section: net
Priority: optional
Description: userspace kernel-bypass packet balancer (DPDK and AF_XDP)
 sluice steers each flow to a backend with Maglev consistent hashing from
 pinned per-core poll loops on DPDK ports or AF_XDP sockets, and forwards it
 by NAT, full NAT, L2 direct server return or IPIP/GUE encapsulation; HTTP and
 TLS services are terminated in its own L7 pool. sluicectl manages services,
 backends, weights, draining and health checks on the running daemon.
 .
 The systemd unit runs /etc/sluice/sluice.toml (as installed, a sample
 capture played through the data path); see sluice.toml(5).
EOF
echo "/etc/sluice/sluice.toml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# Not enabled or started on install: the configuration names this machine's ports first.
if [ "$1" = "configure" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  if systemctl is-active --quiet sluice.service; then
    systemctl try-restart sluice.service || true
  fi
fi
exit 0
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
  systemctl stop sluice.service >/dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = "purge" ]; then
  rm -rf /var/lib/sluice
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) > "$root/DEBIAN/md5sums"

deb="target/debian/sluice_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "== $(dpkg-deb -f "$deb" Package Version Architecture | paste -sd' ') ($(du -h "$deb" | cut -f1)), depends: $depends"
echo "$deb"
