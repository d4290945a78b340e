#!/usr/bin/env bash
# Build the control plane's image with buildah (preferred) or docker, whichever is present.
#   scripts/image.sh [--debian-base]
# IMAGE names the result (default k8s-envoy-control-plane:<version>); BASE the base image (Containerfile's default:
# python:3.12-slim from Docker Hub). --debian-base builds the base itself from Debian's packages (mmdebstrap: Debian
# bookworm with python3) and tags it envoy-control-plane-base:bookworm, for machines that reach no image registry.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE=${IMAGE:-k8s-envoy-control-plane:$version}
DEBIAN_BASE=localhost/envoy-control-plane-base:bookworm

die() { echo "image.sh: $*" >&2; exit 2; }

if command -v buildah >/dev/null; then
  tool=buildah
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  tool=docker
else
  die "neither buildah nor a running docker engine is available (Debian: apt-get install buildah mmdebstrap)"
fi

if [ "${1:-}" = --debian-base ]; then
  [ "$tool" = buildah ] || die "--debian-base needs buildah"
  if ! buildah inspect --type image "$DEBIAN_BASE" >/dev/null 2>&1; then
    command -v mmdebstrap >/dev/null || die "--debian-base needs mmdebstrap (apt-get install mmdebstrap)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "image.sh: building $DEBIAN_BASE with mmdebstrap (Debian bookworm, python3)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$tmp/rootfs.tar"
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd /bin/sh "$ctr"
    buildah commit --quiet --rm "$ctr" "$DEBIAN_BASE" >/dev/null
  fi
  BASE=$DEBIAN_BASE
fi

args=(--tag "$IMAGE" --file Containerfile)
[ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
# A network that inspects TLS has its own CA, which the host's pip trusts (PIP_CERT or pip's global.cert) and the
# base image does not: lend it to the build's pip, read-only, without putting it in the image.
cert=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
if [ "$tool" = buildah ] && [ -f "$cert" ]; then
  args+=(--volume "$cert:/run/host-ca.pem:ro" --build-arg PIP_CERT=/run/host-ca.pem)
fi
echo "image.sh: $tool building $IMAGE${BASE:+ from $BASE}"
if [ "$tool" = buildah ]; then
  buildah bud --quiet --isolation chroot --layers=false "${args[@]}" . >/dev/null
else
  docker build --quiet "${args[@]}" . >/dev/null
fi
echo "image.sh: built $IMAGE"
