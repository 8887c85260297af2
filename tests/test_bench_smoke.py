"""The benchmark harness (bench/, `make bench`) works: a tiny run as a subprocess writes a
number for every scenario and loses nothing. It checks no speed. And the report's words follow
its counts: it never says "all delivered" beside a loss."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not on PATH")]


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
    # every message was waiting in the log: its own cap above them, no send refused
    assert catch["log_maxlen"] > catch["messages"] == catch["waiting"] == catch["sent"]
    assert catch["refused"] == 0 and catch["complete"]
    assert f"all {catch['messages']:,} delivered, exactly once, in order" in done.stdout

    durable = s["durability"]
    assert numbers(durable["0"]["push"]) and numbers(durable["1"]["answer"])
    assert durable["1"]["durable"] == durable["1"]["messages"]  # the replica was up

    assert len(results["targets"]) == 8
    assert all(t["measured"] is not None for t in results["targets"])


# --------------------------------------------------------------------------- the wording
ALL_DELIVERED = re.compile(r"\ball\b[\w\s,]*\bdelivered", re.IGNORECASE)
# the catch-up of docs/benchmarks.md before issue 21: 19 of 10,000 never arrived
CLEAN = {"messages": 10000, "log_maxlen": 20000, "writer_rate_limit": "0", "sent": 10000,
         "refused": 0, "waiting": 10000, "errors": [], "complete": True, "from_exec_s": 0.5,
         "from_initialize_s": 0.35, "msg_per_s": 28651.0, "expected": 10000,
         "delivered": 10000, "lost": 0, "duplicates": 0, "order_ok": True}
RATE = "rate limit: calice may send 5000 messages per second, in bursts of up to 5000"
BAD = {
    "lost": {"delivered": 9981, "lost": 19, "complete": False},
    "duplicates": {"duplicates": 3},
    "order": {"order_ok": False},
    "refused": {"refused": 19, "sent": 10000, "waiting": 9981, "expected": 9981,
                "delivered": 9981, "errors": [RATE]},
    "trimmed": {"waiting": 9900, "expected": 9900, "delivered": 9900},
    "stalled": {"complete": False},
    "not counted": {"waiting": None, "refused": None},
}


def markdown_of(catchup: dict[str, object]) -> str:
    machine = {"cpu": "cpu", "cores": 2, "memory": "1 GiB", "platform": "linux",
               "python": "3.11", "load_average_at_start": [0, 0, 0]}
    results = {"meta": {"command": "make bench", "mode": "full", "duration_s": 60,
                        "machine": machine, "redis_version": "7", "bridge_version": "0",
                        "started": "now", "load_average_at_end": [0, 0, 0]},
               "scenarios": {"catchup": catchup}, "targets": []}
    return report.markdown(results, [])


def catchup_line(text: str) -> str:
    [found] = [line for line in text.splitlines() if line.startswith("- 6. Catch-up")]
    return found


@pytest.mark.parametrize("case", list(BAD))
def test_catchup_never_says_all_delivered_beside_a_problem(case: str) -> None:
    catchup = {k: v for k, v in {**CLEAN, **BAD[case]}.items() if v is not None}
    text = markdown_of(catchup)
    said = catchup_line(text)
    assert not ALL_DELIVERED.search(said), said
    assert "DELIVERY FAILED" in said
    assert "DELIVERY FAILED in this run" in text  # at the top of docs/benchmarks.md too
    if catchup.get("lost"):
        assert "LOST 19 of the 10,000 waiting" in said
    if catchup.get("refused"):
        assert "19 of its sends refused" in said and "rate limit" in said
    printed = report.catchup_text(catchup, bold="")
    assert not ALL_DELIVERED.search(printed) and printed.startswith("DELIVERY FAILED")
    # and the bench exits with status 1 (bench/__main__.py)
    assert report.delivery_problems({"catchup": catchup})


def test_catchup_says_all_delivered_when_it_was() -> None:
    said = catchup_line(markdown_of(CLEAN))
    assert "all 10,000 delivered, exactly once, in order, **0.50 s** after exec" in said
    assert "BRIDGE_LOG_MAXLEN=20,000" in said and "BRIDGE_RATE=0" in said
    assert report.delivery_problems({"catchup": CLEAN}) == []


def test_a_loss_anywhere_fails_the_bench() -> None:
    assert report.delivery_problems({"throughput": {"lost": 2, "duplicates": 0,
                                                    "order_ok": True},
                                     "fanout": {"10": {"lost": 1}}}) == [
        "throughput: LOST 2", "fanout to 10: LOST 1"]


def test_the_catchup_line_alone_is_replaced_and_marked() -> None:
    """`python -m bench --only catchup --replace-in-docs`: one line changes, and it says how
    and when it was measured."""
    page = markdown_of({**CLEAN, **BAD["lost"]})
    rerun = {"meta": {"command": "python -m bench --only catchup --replace-in-docs",
                      "mode": "full", "started": "later",
                      "machine": {"load_average_at_start": [0.1, 0.2, 0.3]},
                      "load_average_at_end": [0.4, 0.5, 0.6]},
             "scenarios": {"catchup": CLEAN}}
    replaced = report.replace_lines(page, rerun)
    changed = [(a, b) for a, b in zip(page.splitlines(), replaced.splitlines(), strict=True)
               if a != b]
    assert len(changed) == 1 and changed[0][0] == catchup_line(page)
    assert changed[0][1].startswith("- 6. Catch-up: 10,000 messages sent")
    assert "all 10,000 delivered, exactly once, in order" in changed[0][1]
    assert ("Measured alone, not in the run this page describes: `python -m bench --only "
            "catchup --replace-in-docs`, full mode, later, load average at start "
            "[0.1, 0.2, 0.3]") in changed[0][1]
