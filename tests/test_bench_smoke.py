"""The benchmark harness (bench/, `make bench`) works: a tiny run as a subprocess writes a
number for every scenario and loses nothing. It checks no speed."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not on PATH")


def numbers(stats: dict[str, float]) -> bool:
    return stats["n"] > 0 and all(
        isinstance(stats[k], float | int) and math.isfinite(stats[k])
        for k in ("min", "p50", "p90", "p99", "max"))


@pytest.mark.timeout(110)
def test_bench_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--smoke", "--json", str(out),
         "--no-docs"],
        cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    s = results["scenarios"]
    assert set(s) == {"latency", "throughput", "senders", "fanout", "presence", "startup",
                      "catchup", "shards", "durability"}
    assert not [name for name, r in s.items() if "error" in r]

    assert numbers(s["latency"]["bridge"]) and numbers(s["latency"]["floor"])
    assert s["latency"]["ratio_p50"] > 0 and s["latency"]["lost"] == 0

    tput = s["throughput"]
    assert tput["msg_per_s"] > 0 and tput["messages"] > 0
    assert (tput["lost"], tput["duplicates"], tput["order_ok"]) == (0, 0, True)
    assert tput["floor"]["msg_per_s"] > 0
    many = s["senders"]
    assert many["msg_per_s"] > 0 and (many["lost"], many["duplicates"], many["order_ok"]) == (
        0, 0, True)
    # every issue 16 target is there, with a verdict
    shown = {t["what"].split(",")[0] for t in results["targets"]}
    assert {"p50 send→push", "one to one", "several senders → one (4 senders)"} <= shown

    sizes = [k for k in s["fanout"] if k.isdigit()]
    assert sizes
    for n in sizes:
        assert numbers(s["fanout"][n]["time_to_last"]) and s["fanout"][n]["lost"] == 0

    agents = [k for k in s["presence"] if k.isdigit()]
    assert agents
    for n in agents:
        p = s["presence"][n]
        assert numbers(p["list_participants"]) and p["listed"] == int(n) + 1
        assert p["per_agent_memory_usage"] > 0 and p["memory_usage_hash"] > 0

    assert numbers(s["startup"]["initialize_ms"]) and numbers(s["startup"]["presence_ms"])
    assert s["startup"]["import"]["total_ms"] > 0
    for where in ("one_node", "three_shards"):
        shard = s["shards"][where]
        assert shard["exact"] and shard["send_usec_per_call"] > 0, shard
        assert shard["redis_usec_per_msg"] > 0 and shard["receive_usec_per_call"] > 0

    catch = s["catchup"]
    assert catch["messages"] > 0 and catch["from_exec_s"] > 0
    assert (catch["lost"], catch["duplicates"], catch["order_ok"]) == (0, 0, True)

    durable = s["durability"]
    assert numbers(durable["0"]["push"]) and numbers(durable["1"]["answer"])
    assert durable["1"]["durable"] == durable["1"]["messages"]  # the replica was up

    assert len(results["targets"]) == 8
    assert all(t["measured"] is not None for t in results["targets"])
