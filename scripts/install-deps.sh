#!/usr/bin/env bash
# Installs the Debian -dev packages mllm4rec builds against, only when one is missing.
# Called by `make`; needs root (or sudo) the first time on a fresh machine.
set -eu
pkgs="gcc make pkg-config libopenblas-openmp-dev libpcre2-dev libjansson-dev libmicrohttpd-dev zlib1g-dev libcurl4-openssl-dev libpng-dev libjpeg62-turbo-dev libwebp-dev libyaml-dev unzip libopenmpi-dev openmpi-bin"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
