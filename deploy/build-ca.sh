#!/bin/sh
# Run a build step (pip, npm) trusting the extra CA certificates in BUILD_CA_CERTS too: for
# builds behind a proxy that re-signs TLS (docs/docker.md: "Building behind a
# TLS-intercepting proxy").
# BUILD_CA_CERTS holds PEM text, e.g. --build-arg BUILD_CA_CERTS="$(cat corp-ca.crt)". The
# files live in a temporary folder for this one command and are gone when it ends; only the
# builder stages run this, so nothing of it reaches the agent image.
set -eu
if [ -z "${BUILD_CA_CERTS:-}" ]; then
  exec "$@"
fi
case "$BUILD_CA_CERTS" in
  *"-----BEGIN CERTIFICATE-----"*) ;;
  *) echo "build-ca: BUILD_CA_CERTS holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the certificates' text, e.g. --build-arg BUILD_CA_CERTS=\"\$(cat corp-ca.crt)\"" >&2
     exit 64 ;;
esac
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '%s\n' "$BUILD_CA_CERTS" > "$dir/extra.pem"
# pip wants one bundle: the system's roots (where the image has them) plus the extra ones
cat /etc/ssl/certs/ca-certificates.crt "$dir/extra.pem" > "$dir/bundle.pem" 2>/dev/null \
  || cp "$dir/extra.pem" "$dir/bundle.pem"
PIP_CERT="$dir/bundle.pem" NODE_EXTRA_CA_CERTS="$dir/extra.pem" "$@"
