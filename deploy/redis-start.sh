#!/bin/sh
# The team's Redis (docker-compose.yml, profile redis): AOF on, a password or an ACL file, and
# TLS when a certificate is mounted. The password goes into a config file on tmpfs, not onto
# the command line, where `ps` and `docker inspect` would show it.
set -eu
CONF=${REDIS_CONF:-/tmp/bridge-redis.conf}
ACL=${REDIS_ACL:-/run/redis/users.acl}
TLS=${REDIS_TLS_DIR:-/run/redis/tls}
PORT=${REDIS_PORT:-6379}
umask 077
if [ -f "$ACL" ]; then
  printf 'aclfile %s\n' "$ACL" > "$CONF"
elif [ -n "${REDIS_PASSWORD:-}" ]; then
  printf 'requirepass %s\n' "$REDIS_PASSWORD" > "$CONF"
else
  echo "redis-start: set REDIS_PASSWORD (make up-redis REDIS_PASSWORD=...) or mount an ACL file at $ACL" >&2
  exit 64
fi
unset REDIS_PASSWORD
# everysec: a killed Redis loses nothing, a power cut at most a second (docs/reliability.md: Durability)
printf 'appendonly yes\nappendfsync everysec\ndir %s\n' "${REDIS_DATA:-/data}" >> "$CONF"
if [ -f "$TLS/cert.pem" ]; then
  # TLS only: the plain port is closed, agents use rediss://
  printf 'port 0\ntls-port %s\ntls-cert-file %s\ntls-key-file %s\n' "$PORT" "$TLS/cert.pem" "$TLS/key.pem" >> "$CONF"
  if [ -f "$TLS/ca.pem" ]; then
    printf 'tls-ca-cert-file %s\ntls-auth-clients yes\n' "$TLS/ca.pem" >> "$CONF"
  else
    printf 'tls-auth-clients no\n' >> "$CONF"
  fi
else
  printf 'port %s\n' "$PORT" >> "$CONF"
fi
exec redis-server "$CONF" "$@"
