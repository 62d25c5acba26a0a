#!/usr/bin/env bash
# Makes the test certificates of the L7 pool's TLS tests (committed; run again to renew):
# a P-256 CA, and leaves signed by it for www.example (+ *.example) and *.img.example
# (+ img.example), valid for 100 years; the same www names on an RSA-2048 key (rsa.pem, for
# the RSA handshake benchmark); a client certificate (client.pem, clientAuth, for mTLS to
# backends); a second CA that signed none of them (other-ca.pem, the wrong CA of the
# re-encryption tests); and one for old.example that expired in 2001 (to test that an
# expired certificate is refused). Needs openssl.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
  -subj "/CN=sluice test CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days $days \
  -subj "/CN=some other CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
rm -f other-ca.key
# leaf NAME SANS [KEY-OPTIONS] [EXTENDED-KEY-USAGE]
leaf() {
  local name=$1 sans=$2 key=${3:-"ec -pkeyopt ec_paramgen_curve:P-256"} eku=${4:-serverAuth}
  # shellcheck disable=SC2086
  openssl req -newkey $key -nodes -subj "/CN=$name" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
    -extfile <(printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=%s\n" "$sans" "$eku") \
    -out "$name.leaf" 2>/dev/null
  # The chain, leaf first.
  cat "$name.leaf" ca.pem > "$name.pem"
  rm -f "$name.csr" "$name.leaf"
}
leaf www "DNS:www.example,DNS:*.example"
leaf img "DNS:*.img.example,DNS:img.example"
leaf rsa "DNS:www.example,DNS:*.example" "rsa:2048"
leaf client "DNS:sluice.client" "ec -pkeyopt ec_paramgen_curve:P-256" clientAuth
rm -f ca.srl
# The expired one: `openssl ca` is what lets a start and end date be given.
db=$(mktemp -d)
touch "$db/index.txt"; echo 01 > "$db/serial"
printf '[ca]\ndefault_ca = d\n[d]\ndatabase = %s/index.txt\nserial = %s/serial\nnew_certs_dir = %s\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n' \
  "$db" "$db" "$db" > "$db/ca.cnf"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=old.example" \
  -keyout old.key -out "$db/old.csr" 2>/dev/null
openssl ca -batch -config "$db/ca.cnf" -cert ca.pem -keyfile ca.key -in "$db/old.csr" \
  -out old.pem -startdate 20000101000000Z -enddate 20010101000000Z -notext 2>/dev/null
rm -rf "$db"
