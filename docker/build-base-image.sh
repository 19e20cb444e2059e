#!/usr/bin/env bash
# Builds a stand-in for python:3.11-slim-bookworm from Debian's own packages, for machines that
# reach Debian's archive and PyPI but no container registry (this project's CI is one):
#
#   docker/build-base-image.sh [TAG]          # default TAG: homefeed-base:bookworm
#   make image BASE_IMAGE=homefeed-base:bookworm
#
# What the image has, like the official one: Debian bookworm, Python 3.11 (Debian's), `python`
# and `pip` on PATH, pip allowed to install system-wide (Debian's EXTERNALLY-MANAGED marker is
# removed: the image is a single-purpose container, not a shared system), CA certificates,
# LANG=C.UTF-8. Security updates are applied. Nothing of this machine's network set-up is kept
# (resolv.conf, hostname, apt lists and package caches are removed before the import).
#
# Mirrors: DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR (default: Debian's own); an HTTP proxy in
# http_proxy or in apt's configuration (Acquire::http::Proxy) is used for the download only.
# Needs root (debootstrap), debootstrap and a Docker daemon.
set -euo pipefail

TAG=${1:-homefeed-base:bookworm}
DOCKER=${DOCKER:-docker}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

die() { echo "build-base-image: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root (or with sudo)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker daemon answers '$DOCKER info'"

# The host's apt proxy, if any, for debootstrap's downloads and apt inside the chroot.
if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null; then
  eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
  [ -n "${http_proxy:-}" ] && export http_proxy
fi

rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/homefeed-base.XXXXXX")
case "$rootfs" in /?*/homefeed-base.*) ;; *) die "unexpected build directory '$rootfs'";; esac
chmod 755 "$rootfs"  # the image's /: mktemp made it private
cleanup() {
  umount "$rootfs/proc" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

echo "build-base-image: debootstrap $SUITE from $MIRROR"
debootstrap --variant=minbase \
  --include=python3,python3-pip,python-is-python3,ca-certificates \
  "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
  || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed (log above)"; }
rm -f "$rootfs.log"

cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
echo "build-base-image: applying $SUITE updates"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  ${http_proxy:+http_proxy=$http_proxy} \
  sh -c 'apt-get -o APT::Sandbox::User=root update -qq && apt-get -o APT::Sandbox::User=root upgrade -y -qq && apt-get clean' \
  >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "apt-get upgrade failed (log above)"; }
rm -f "$rootfs.log"
umount "$rootfs/proc"

# pip may install system-wide, as in the official python image.
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
# Slim, as Debian's -slim images: no docs (but the copyright files), man pages or translations,
# now or from packages installed later.
printf 'path-exclude %s\n' '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/groff/*' '/usr/share/info/*' \
  '/usr/share/lintian/*' '/usr/share/locale/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
printf 'path-include /usr/share/doc/*/copyright\n' >>"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
# ... and, like them, apt keeps no downloaded packages in the image.
printf '%s\n' \
  'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
  'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
  'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$rootfs/etc/apt/apt.conf.d/docker-clean"
find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/locale/*
# Nothing of this machine, no caches.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache \
  "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
find "$rootfs/usr/lib/python3" "$rootfs/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +

echo "build-base-image: importing as $TAG"
tar -C "$rootfs" --numeric-owner -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
"$DOCKER" run --rm --user 65534 "$TAG" sh -c 'python --version && pip --version' \
  || die "the imported image cannot run python and pip (as an unprivileged user)"
echo "build-base-image: $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
