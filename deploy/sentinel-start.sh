#!/bin/sh
# One member of the Sentinel group (deploy/sentinel.yml): ROLE=primary, replica or sentinel.
# The password goes into a config file, not onto the command line (ps, docker inspect).
# Every member announces its service name (resolved by the sentinels and the agents on the
# compose network); for agents on other hosts, set ANNOUNCE to this host's address and
# publish the ports (docs/scaling.md: Sentinel).
set -eu
: "${REDIS_PASSWORD:?set REDIS_PASSWORD (the same for every member)}"
ANNOUNCE=${ANNOUNCE:-$(hostname)}
umask 077
case "$ROLE" in
  primary|replica)
    CONF=/tmp/redis.conf
    printf 'port 6379\nrequirepass %s\nmasterauth %s\nappendonly yes\nappendfsync everysec\ndir /data\n' \
      "$REDIS_PASSWORD" "$REDIS_PASSWORD" > "$CONF"
    printf 'replica-announce-ip %s\n' "$ANNOUNCE" >> "$CONF"
    # a primary that has lost every replica refuses writes (off by default: with a single
    # replica, the primary promoted in a failover then refuses writes until another joins)
    printf 'min-replicas-to-write %s\nmin-replicas-max-lag 10\n' "${MIN_REPLICAS_TO_WRITE:-0}" >> "$CONF"
    if [ "$ROLE" = replica ]; then
      printf 'replicaof %s 6379\n' "$PRIMARY_HOST" >> "$CONF"
    fi
    ;;
  sentinel)
    # Sentinel rewrites its file with what it learns (the current primary): keep it in /data
    CONF=/data/sentinel.conf
    if [ ! -f "$CONF" ]; then
      printf 'port 26379\nsentinel resolve-hostnames yes\nsentinel announce-hostnames yes\n' > "$CONF"
      printf 'sentinel announce-ip %s\nrequirepass %s\nsentinel sentinel-pass %s\n' \
        "$ANNOUNCE" "$REDIS_PASSWORD" "$REDIS_PASSWORD" >> "$CONF"
      printf 'sentinel monitor %s %s 6379 2\nsentinel auth-pass %s %s\n' \
        "$SERVICE" "$PRIMARY_HOST" "$SERVICE" "$REDIS_PASSWORD" >> "$CONF"
      printf 'sentinel down-after-milliseconds %s 5000\nsentinel failover-timeout %s 30000\n' \
        "$SERVICE" "$SERVICE" >> "$CONF"
    fi
    unset REDIS_PASSWORD
    exec redis-server "$CONF" --sentinel
    ;;
  *) echo "sentinel-start: ROLE must be primary, replica or sentinel" >&2; exit 64 ;;
esac
unset REDIS_PASSWORD
exec redis-server "$CONF"
