#!/bin/sh
# The team's Redis (docker-compose.yml, profile redis): AOF on, and a password or an ACL file.
# The password goes into a config file on tmpfs, not onto the command line, where `ps` and
# `docker inspect` of the process would show it.
set -eu
CONF=${REDIS_CONF:-/tmp/bridge-redis.conf}
ACL=${REDIS_ACL:-/run/redis/users.acl}
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
# everysec: a killed Redis loses nothing, a power cut at most a second (README: Durability)
exec redis-server "$CONF" --appendonly yes --appendfsync everysec \
  --dir "${REDIS_DATA:-/data}" --port "${REDIS_PORT:-6379}" "$@"
