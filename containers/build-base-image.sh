#!/usr/bin/env bash
# Build the local base image (Debian bookworm + Python 3.11 + venv + CA certificates) from Debian
# packages with debootstrap, for hosts that cannot pull from a container registry.
# Usage: containers/build-base-image.sh [TAG]   (default tag: hm-base:bookworm)
# The Debian mirror is the one this host's apt already uses (no address is baked in here).
set -euo pipefail
TAG="${1:-hm-base:bookworm}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG already exists"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }

mirror_from_apt() {
    local uri
    uri=$(grep -h -m1 -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -h -m1 -E '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' || true)
    fi
    echo "$uri"
}
MIRROR="${DEBIAN_MIRROR:-$(mirror_from_apt)}"
[ -n "$MIRROR" ] || { echo "error: no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2; exit 1; }

ROOTFS=$(mktemp -d /tmp/hm-base-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "debootstrap bookworm into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
    bookworm "$ROOTFS" "$MIRROR" >/tmp/hm-debootstrap.log 2>&1 \
    || { echo "error: debootstrap failed, see /tmp/hm-debootstrap.log" >&2; tail -20 /tmp/hm-debootstrap.log >&2; exit 1; }
# No package caches or lists in the image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$TAG"
echo "built $TAG"
