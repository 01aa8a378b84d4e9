#!/usr/bin/env bash
# A private CA and a server certificate for the compose deploy (API + MLLP on the gateway).
#
#   deploy/compose/make-certs.sh [DIR] [NAMES]    default DIR: deploy/compose/tls
#                                                 default NAMES: gateway,localhost
#
# Writes ca.crt/ca.key and server.crt/server.key (mode 0600 keys). Give the hospital's own
# certificates instead in production: put them in DIR under the same names.
set -euo pipefail
dir="${1:-$(cd "$(dirname "$0")" && pwd)/tls}"
names="${2:-gateway,localhost}"
mkdir -p "$dir"
umask 077
san="$(echo "$names" | tr ',' '\n' | sed 's/^/DNS:/' | paste -sd, -),IP:127.0.0.1"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=carescore private CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=${names%%,*}" \
  -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 825 -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=serverAuth\n" "$san") \
  -out "$dir/server.crt" 2>/dev/null
rm -f "$dir/server.csr" "$dir/ca.srl"
chmod 0644 "$dir/ca.crt" "$dir/server.crt"
echo "make-certs.sh: CA and server certificate for $names in $dir"
