"""`bridge doctor`'s checks of where things go: how messages reach a Claude Code here (its
session inbox, the channel, or pull), and the Redis behind the URL (a cluster and the node
that serves the room; a primary, its replicas and sentinels)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import codex
from bridge.delivery import SOCKET_VAR, offered, probe
from bridge.ops.check import Check, Report
from bridge.redis import cluster, sentinel
from bridge.room.keys import Keys
from bridge.settings import Settings
from bridge.transcript import CONFIG_VAR, Transcript

CHANNEL_KILLERS = ("DISABLE_TELEMETRY", "DO_NOT_TRACK", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")


def delivery_checks(env: dict[str, str]) -> list[Check]:
    """How messages can reach a Claude Code conversation from here: its session inbox (no
    flag), else the channel (whose one blind spot is said plainly), else pull."""
    checks = []
    address = offered(env)
    if address is None:
        checks.append(Check(
            "info", "delivery: not run by Claude Code here, so its session inbox cannot be "
                    "checked; an agent's list_participants (and `bridge who`) shows the path "
                    "each agent took: inbox, channel, codex or pull",
            "Claude Code 2.1.224 or later gives every bridge serve it starts its session "
            "inbox: nothing to do. Older versions need `claude "
            "--dangerously-load-development-channels server:bridge`; Claude Code does not "
            "tell bridge whether it loaded the channel, so a message pushed to a session "
            "started without the flag is lost: use --delivery pull there"))
    else:
        problem = probe(address)
        checks.append(Check(
            "ok", f"delivery: Claude Code's session inbox accepts connections "
                  f"({address.path}): messages reach the conversation with no flag") if
            problem is None else Check(
            "warn", f"delivery: {SOCKET_VAR} is set but the inbox does not answer "
                    f"({problem}): agents fall back to the channel",
            "restart Claude Code; with --delivery auto the agents use the inbox again"))
        checks.append(evidence_check(env))
    codex_found = codex_check(env)
    if codex_found is not None:
        checks.append(codex_found)
    for var in CHANNEL_KILLERS:
        if env.get(var):
            checks.append(Check(
                "warn", f"{var} is set: it switches Claude Code channels off (the session "
                        f"inbox keeps working), so an agent on the channel path gets nothing",
                f"use Claude Code 2.1.224 or later (the inbox), unset {var}, or run such "
                f"agents with --delivery pull (they then call read_messages)"))
    return checks


def codex_check(env: dict[str, str]) -> Check | None:
    """Whether `codex queue` could push into a Codex session from here (None where there is
    no sign of Codex at all)."""
    codex_home = codex.home(env)
    binary = codex.find_binary(env, env.get("BRIDGE_CODEX_BIN", ""))
    if binary is None and not codex_home.is_dir() and codex.HOME_VAR not in env:
        return None
    if binary is None:  # (info: a folder alone says little; CODEX_HOME set says more)
        return Check(
            "warn" if codex.HOME_VAR in env else "info",
            f"codex: a Codex home at {codex_home}, but no codex binary to queue "
                    f"messages with (none on PATH, no daemon copy under it): a Codex agent "
                    f"here is not pushed to, and calls read_messages instead",
            "set BRIDGE_CODEX_BIN to the codex binary in the [mcp_servers.bridge] entry's env")
    if not (codex_home / "sessions").is_dir():
        return Check(
            "warn", f"codex: {binary} found, but {codex_home} has no sessions: if Codex keeps "
                    f"its home elsewhere, bridge serve cannot queue into its sessions",
            f"pass it on: env_vars = [\"{codex.HOME_VAR}\"] in the [mcp_servers.bridge] entry "
            f"of Codex's config.toml")
    return Check("ok", f"codex: a Codex agent here is pushed to with `{binary} queue` "
                       f"(Codex home {codex_home}), once its first bridge tool call names its "
                       f"thread; under `codex exec` it calls read_messages instead")


def evidence_check(env: dict[str, str]) -> Check:
    """Whether an inbox post's delivery can be proven here (bridge.transcript): then the
    cursor waits for the model, else it moves once a post is written."""
    transcript = Transcript(env)
    problem = transcript.problem()
    if problem is None:
        return Check("ok", f"delivery evidence: Claude Code's session transcript "
                           f"({transcript.config / 'projects'}, session "
                           f"{transcript.session_id() or '?'}): the cursor passes a message "
                           f"once a model request carried it, so a crash loses nothing")
    return Check(
        "warn", f"delivery evidence: none ({problem}): the cursor passes a message once its "
                f"post is written, so a Claude Code that ends with posts still queued (killed, "
                f"or /exit while busy) loses them",
        f"run bridge serve from Claude Code 2.1.328 or later with its transcripts kept "
        f"(set {CONFIG_VAR} if its folder is not ~/.claude); docs/guarantees.md")


async def cluster_shard(client: Redis, settings: Settings, report: Report) -> Redis:
    """Where the room lives (its slot, the primary that serves it, the cluster's state);
    then the checks that follow run on that primary."""
    shard = await cluster.room_shard(client, Keys(settings.room).log)
    replicas = ", ".join(shard.replicas) or "none: a failure of it stops the room"
    report(Check(
        "ok" if shard.state == "ok" and shard.replicas else "warn",
        f"Redis Cluster, cluster_state {shard.state}, {shard.primaries} primaries; room "
        f"{settings.room} is in slot {shard.slot}, served by {shard.owner} "
        f"(replicas: {replicas}); the checks below ask that node",
        "" if shard.state == "ok" else "see CLUSTER INFO and CLUSTER NODES on that node"))
    return cluster.node_client(await cluster.owner(client, Keys(settings.room).log))


async def replication(client: Redis, url: str, settings: Settings, report: Report) -> None:
    """Who the primary is and how many replicas it has; whether BRIDGE_MIN_REPLICAS can
    be met."""
    if sentinel.is_sentinel_url(url):
        try:
            watched = await sentinel.describe(url)
        except (RedisError, OSError) as e:
            report(Check("fail", f"Sentinel: no sentinel in the URL answers about the "
                                      f"primary ({e})", "check the sentinels' addresses "
                                      "and that they run"))
            return
        listed = len(sentinel.parse(url).sentinels)
        replicas = watched.replicas
        if watched.sentinels < watched.quorum:
            report(Check("warn", f"Sentinel: {watched.sentinels} sentinel(s) watch "
                                      f"{watched.service!r}, fewer than its quorum "
                                      f"({watched.quorum}): no failover can happen",
                              "run at least three sentinels, on separate hosts"))
        report(Check(
            "ok" if watched.sentinels_up == listed else "warn",
            f"Sentinel-watched primary {watched.service!r} at {watched.primary}: "
            f"{replicas} replica(s) up, {watched.sentinels} sentinel(s) watch it (quorum "
            f"{watched.quorum}); {watched.sentinels_up} of the {listed} in the URL answer",
            "" if watched.sentinels_up == listed else
            "a sentinel in the URL does not answer: start it, or drop it from the URL"))
    else:
        info = await client.info("replication")
        replicas = int(info.get("connected_slaves", 0))
        if info.get("role") != "master":
            report(Check(
                "fail", f"replication: this Redis is a replica (of "
                        f"{info.get('master_host')}:{info.get('master_port')}): it refuses "
                        f"bridge's writes",
                "point --redis / BRIDGE_REDIS_URL at the primary, or at its sentinels "
                "(redis+sentinel://…) so that bridge follows a failover"))
            return
        report(Check("info", f"replication: a primary with {replicas} replica(s) "
                                  f"connected"))
    wanted = settings.min_replicas
    if wanted > replicas:
        report(Check(
            "warn", f"BRIDGE_MIN_REPLICAS={wanted}, but the primary has {replicas} "
                    f"replica(s): every send waits {settings.min_replicas_timeout:g} "
                    f"s and is answered 'not known to be durable'",
            "start the replicas, or lower BRIDGE_MIN_REPLICAS"))
