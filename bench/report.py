"""Targets, the Markdown report and the plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

NOTES = Path(__file__).with_name("notes.md")


CPU_LABELS = {"A": "sender A", "B": "receiver B",
              "client": "the harness (MCP client of A and B)"}


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _sized(section: Any) -> dict[str, Any]:
    """The per-N entries of a scenario (keys "10", "1000", ...)."""
    return {k: v for k, v in (section or {}).items() if k.isdigit() and isinstance(v, dict)}


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def catchup_problems(cu: dict[str, Any]) -> list[str]:
    """What keeps a catch-up run from being "all N delivered, exactly once, in order": a
    setup that did not put all N messages in the log, and any loss, duplicate or reordering
    of what was there. A count that is missing counts as a problem (not checked)."""
    problems: list[str] = []
    n = cu.get("messages")
    waiting = cu.get("waiting")
    refused = cu.get("refused")
    if refused is None or waiting is None or n is None:
        problems.append("what was waiting in the log was not counted")
    if refused:
        first = (cu.get("errors") or [""])[0]
        problems.append(f"the writer had {refused:,} of its sends refused"
                        + (f" ({first[:160]})" if first else ""))
    if n is not None and waiting is not None and waiting < n:
        problems.append(f"only {waiting:,} of the {n:,} messages were waiting in the log")
    lost, duplicates, order_ok = cu.get("lost"), cu.get("duplicates"), cu.get("order_ok")
    if lost is None or duplicates is None or order_ok is None:
        problems.append("delivery was not checked")
    if lost:
        problems.append(f"LOST {lost:,} of the {_count(waiting)} waiting")
    if duplicates:
        problems.append(f"{duplicates:,} DUPLICATES")
    if order_ok is False:
        problems.append("order BROKEN")
    if cu.get("complete") is False and not lost:
        problems.append("delivery stalled before the last message")
    return problems


def catchup_text(cu: dict[str, Any], bold: str = "**") -> str:
    """The catch-up figures in words derived from the counts: "all N delivered, exactly once,
    in order" only when nothing was refused, lost, duplicated or reordered; otherwise the
    problems first, and the time is not called a catch-up time."""
    n = cu.get("messages", 0)
    setup = []
    if cu.get("log_maxlen"):
        setup.append(f"the room's BRIDGE_LOG_MAXLEN={cu['log_maxlen']:,}")
    if cu.get("writer_rate_limit") == "0":
        setup.append("the writer not rate-limited (BRIDGE_RATE=0)")
    sent = (f"{n:,} messages sent to an agent while it was away"
            + (f" ({', '.join(setup)})" if setup else ""))
    problems = catchup_problems(cu)
    times = (f"{cu.get('from_initialize_s', float('nan')):.2f} s after initialize, "
             f"{cu.get('msg_per_s', 0):,.0f} msg/s")
    if not problems:
        return (f"{sent}: all {n:,} delivered, exactly once, in order, "
                f"{bold}{cu['from_exec_s']:.2f} s{bold} after exec ({times}).")
    delivered, waiting = cu.get("delivered"), cu.get("waiting")
    arrived = (f"{delivered:,} of the {_count(waiting)} waiting arrived"
               if delivered is not None else "arrivals not counted")
    return (f"{bold}DELIVERY FAILED{bold}: {'; '.join(problems)}. {sent}; {arrived}, the "
            f"last {cu.get('from_exec_s', float('nan')):.2f} s after exec ({times}): not a "
            f"catch-up time.")


def catchup_line(cu: dict[str, Any]) -> str:
    return f"{LINE_OF['catchup']} {catchup_text(cu)}"


# the scenarios whose figures are one line of benchmarks.md, and that line's start: `python -m
# bench --only catchup --replace-in-docs` measures one again and replaces its line alone
LINE_OF = {"catchup": "- 6. Catch-up:"}


def replace_lines(page: str, results: dict[str, Any]) -> str:
    """benchmarks.md with the lines of this run's scenarios replaced, each marked as measured
    alone (command, date, load), the rest of the page as it was."""
    meta, s = results["meta"], results["scenarios"]
    lines = page.splitlines()
    for name, result in s.items():
        if "error" in result:
            raise ValueError(f"{name} failed ({result['error'][:200]}): its line is left as is")
        at = [i for i, text in enumerate(lines) if text.startswith(LINE_OF[name])]
        if len(at) != 1:
            raise ValueError(f"{len(at)} lines of benchmarks.md start with {LINE_OF[name]!r}")
        lines[at[0]] = (
            f"{catchup_line(result)} (Measured alone, not in the run this page describes: "
            f"`{meta['command']}`, {meta['mode']} mode, {meta['started']}, load average at "
            f"start {meta['machine'].get('load_average_at_start')}, at end "
            f"{meta.get('load_average_at_end')}.)")
    return "\n".join(lines) + "\n"


def delivery_problems(scenarios: dict[str, Any]) -> list[str]:
    """Every scenario that lost, duplicated or reordered messages (or, for the catch-up,
    did not have all its messages waiting): the bench exits with status 1 for any."""
    found: list[str] = []
    for name, r in scenarios.items():
        if not isinstance(r, dict) or "error" in r:
            continue  # a failed scenario is reported (and fails the run) as such
        if name == "catchup":
            found += [f"catchup: {p}" for p in catchup_problems(r)]
            continue
        if r.get("lost"):
            found.append(f"{name}: LOST {r['lost']:,}")
        if r.get("duplicates"):
            found.append(f"{name}: {r['duplicates']:,} DUPLICATES")
        if r.get("order_ok") is False:
            found.append(f"{name}: order BROKEN")
        for n, sized in _sized(r).items():
            if sized.get("lost"):
                found.append(f"{name} to {n}: LOST {sized['lost']:,}")
    return found


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """docs/design.md's budget and issue 16's targets, each with the measured value (beside
    its floor of the same run), met/missed, and for a miss the measured reason."""
    s = results["scenarios"]
    rows: list[dict[str, Any]] = []

    def row(what: str, target: str, value: float | None, shown: str, ok: bool | None,
            why: str = "") -> None:
        rows.append({"what": what, "target": target, "measured": value, "shown": shown,
                     "met": ok, "why": why if ok is False else ""})

    cores = (results.get("meta", {}).get("machine", {}).get("cores")) or 2
    # issue 16: below the bare relay's p50, and within 3.5x the floor of the same run
    p50, p99 = _get(s, "latency", "bridge", "p50"), _get(s, "latency", "bridge", "p99")
    floor = _get(s, "latency", "floor", "p50")
    ratio = _get(s, "latency", "ratio_p50")
    steps = _get(s, "latency", "steps_p50_ms") or {}
    biggest = "; ".join(f"{label.split(' (')[0]} {ms:.3f} ms" for label, ms in
                        sorted(steps.items(), key=lambda kv: -kv[1])[:3])
    hops = _get(s, "latency", "hops", "p50")
    why = f"the largest steps (p50): {biggest}" if biggest else ""
    cold = _get(s, "latency", "cpu_us_per_message") or {}
    warm = _get(s, "throughput", "cpu_us_per_message") or {}
    if cold.get("A") and cold.get("B"):
        why += (f". One message at a time, A uses {cold['A']:.0f} µs of CPU per message, B "
                f"{cold['B']:.0f}, Redis {cold.get('redis', 0):.0f}")
        if warm.get("A") and warm.get("B"):
            why += (f" (in the throughput run's bursts: A {warm['A']:.0f}, B {warm['B']:.0f}, "
                    f"Redis {warm.get('redis', 0):.0f}): a process woken for each message runs "
                    f"the same code {(cold['A'] + cold['B']) / (warm['A'] + warm['B']):.1f}× "
                    f"slower on this machine")
    if hops and floor:
        why = (f"the four hops alone (stdin pipe → relay → PUBLISH → sink → stdout pipe, nothing "
               f"of bridge in them) take {hops:.3f} ms, {hops / floor:.1f}× the floor; bridge "
               f"adds {p50 - hops:.3f} ms to them. " + why) if p50 else why
    row("p50 send→push", "≤ 0.5 ms and ≤ 3.5× floor", p50,
        f"{p50:.3f} ms, {ratio:.1f}× the floor (floor p50 {floor:.3f} ms)" if p50 else "-",
        None if p50 is None else p50 <= 0.5 and ratio <= 3.5, why)
    row("p99 send→push", "≤ 3 ms", p99, f"{p99:.3f} ms" if p99 else "-",
        None if p99 is None else p99 <= 3)
    for name, what in (("throughput", "one to one"), ("senders", "several senders → one")):
        tput = _get(s, name)
        if not tput or "msg_per_s" not in tput:
            row(f"{what}, no loss, per-sender order kept", "≥ 6,000 msg/s", None, "-", None)
            continue
        clean = tput["lost"] == 0 and tput["duplicates"] == 0 and tput["order_ok"]
        floor_tput = _get(s, "throughput", "floor", "msg_per_s")
        cpu = tput.get("cpu_us_per_message", {})
        total_cpu = sum(cpu.values())
        label = f"{what}" + (f" ({tput['senders']} senders)" if name == "senders" else "")
        why = (f"the processes of the run use {total_cpu:.0f} µs of CPU per message ("
               + ", ".join(f"{who} {us:.0f}" for who, us in cpu.items())
               + f"): {cores} cores cap it near {cores * 1e6 / total_cpu:,.0f} msg/s"
               if total_cpu else "")
        row(f"{label}, no loss, per-sender order kept", "≥ 6,000 msg/s", tput["msg_per_s"],
            f"{tput['msg_per_s']:,.0f} msg/s, lost {tput['lost']}, order "
            f"{'kept' if tput['order_ok'] else 'BROKEN'}"
            + (f" (floor: pub/sub {floor_tput:,.0f} msg/s)" if floor_tput else ""),
            tput["msg_per_s"] >= 6000 and clean, why)
    fan = _sized(_get(s, "fanout"))
    sizes = sorted((int(n) for n in fan if n.isdigit()), reverse=True)
    if sizes:
        n = sizes[0]
        value = fan[str(n)]["time_to_last"].get("p99")
        floor_p99 = fan[str(n)].get("floor_time_to_last", {}).get("p99")
        cpu_each = fan[str(n)].get("receiver_cpu_us")
        label = "fan-out to 100, p99" + ("" if n == 100 else f" (this run: {n} agents)")
        text = f"{value:.2f} ms" if value is not None else "-"
        if value is not None and floor_p99:
            text += f" (floor p99 {floor_p99:.1f} ms, {value / floor_p99:.1f}×)"
        floor_cpu = fan[str(n)].get("floor_subscriber_cpu_us")
        why = (f"each receiver uses {cpu_each:.0f} µs of CPU per broadcast"
               + (f" (a bare redis-py subscriber of the floor {floor_cpu:.0f} µs)"
                  if floor_cpu else "")
               + f": {n} of them on {cores} cores take {cpu_each * n / cores / 1000:.1f} ms "
               f"at the least" if cpu_each else "")
        row(label, "≤ 2× its floor", value, text,
            None if value is None or not floor_p99
            else value <= 2 * floor_p99 and fan[str(n)]["lost"] == 0, why)
    else:
        row("fan-out to 100, p99", "≤ 2× its floor", None, "-", None)
    pres = _sized(_get(s, "presence"))
    at = "1000" if "1000" in pres else max(pres, key=int, default=None)
    if at:
        value = pres[at]["list_participants"]["p50"]
        p99_list = pres[at]["list_participants"]["p99"]
        row(f"list_participants at {int(at):,} agents (p50)", "≤ 20 ms", value,
            f"{value:.2f} ms (p99 {p99_list:.2f})", value <= 20)
    else:
        row("list_participants at 1,000 agents", "≤ 20 ms", None, "-", None)
    init = _get(s, "startup", "initialize_ms", "p50")
    seen = _get(s, "startup", "presence_ms", "p50")
    row("start-up: exec → initialize answered (p50)", "≤ 500 ms", init,
        f"{init:.0f} ms (presence visible {seen:.0f} ms)" if init else "-",
        None if init is None else init <= 500)
    big = max(pres, key=int, default=None)
    if big:
        mem = pres[big]["per_agent_memory_usage"]
        row(f"Redis memory per online agent (at {int(big):,})", "≤ 1 KiB", mem,
            f"{mem:.0f} B MEMORY USAGE (hash + ZSET share); {pres[big]['info_delta_per_agent']:.0f}"
            f" B INFO delta incl. cursor key", mem <= 1024)
    else:
        row("Redis memory per online agent", "≤ 1 KiB", None, "-", None)
    return rows


def _stats_row(label: str, st: dict[str, Any] | None, unit: str = "ms") -> str:
    if not st or not st.get("n"):
        return f"| {label} | - | - | - | - | - | - |"
    return (f"| {label} | {st['n']} | {st['min']:.3f} | {st['p50']:.3f} | {st['p90']:.3f} | "
            f"{st['p99']:.3f} | {st['max']:.3f} |")


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    meta, s = results["meta"], results["scenarios"]
    m = meta["machine"]
    out = [
        "# Benchmarks",
        "",
        "Generated by `bench/` (issue 5); every run overwrites this file. Real `bridge serve` "
        "processes driven as MCP clients over stdio against a private `redis-server` "
        "(`--save \"\" --appendonly no`, on a free TCP port of 127.0.0.1).",
        "",
        f"- Command: `{meta['command']}` ({meta['mode']} mode, {meta['duration_s']:.0f} s)",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {m['platform']}",
        f"- Python {m['python']}, Redis {meta['redis_version']}, bridge {meta['bridge_version']}",
        f"- Date: {meta['started']}; load average (1, 5, 15 min) at start "
        f"{m.get('load_average_at_start')}, at end {meta.get('load_average_at_end')} "
        f"(other work on the machine shows here and inflates every figure)",
    ]
    problems = delivery_problems(s)
    if problems:
        out += ["", "**DELIVERY FAILED in this run** (the bench exited with status 1): "
                + "; ".join(problems) + "."]
    out += [
        "",
        "## Targets (docs/design.md's budget, issue 16), with the floors of the same run",
        "",
        "| what | target | measured | | why, when missed (measured in this run) |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        out.append(f"| {t['what']} | {t['target']} | {t['shown']} | {verdict} | "
                   f"{t.get('why', '')} |")
    out += ["", "## Results", "", "Times in ms.", "",
            "| scenario | n | min | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|---|"]
    lat = s.get("latency", {})
    out.append(_stats_row("1. send_message → channel push at B (one at a time)",
                          lat.get("bridge")))
    out.append(_stats_row("1. floor: redis-py PUBLISH → receive, other process (monotonic)",
                          lat.get("floor")))
    out.append(_stats_row("1. floor: redis-py round trip / 2", lat.get("floor_half_rtt")))
    out.append(_stats_row("1. floor of the shape: stdin pipe → relay → PUBLISH → sink → stdout "
                          "pipe (bench/hops.py)", lat.get("hops")))
    for n, f in sorted(_sized(s.get("fanout")).items(), key=lambda kv: int(kv[0])):
        out.append(_stats_row(f"3. broadcast to {n} agents: until the last has it",
                              f["time_to_last"]))
        if f.get("floor_time_to_last"):
            out.append(_stats_row(f"3. floor: PUBLISH to {n} redis-py subscriber processes",
                                  f["floor_time_to_last"]))
    for n, p in sorted(_sized(s.get("presence")).items(), key=lambda kv: int(kv[0])):
        out.append(_stats_row(f"4. list_participants with {int(n):,} agents",
                              p["list_participants"]))
    st = s.get("startup", {})
    out.append(_stats_row("5. exec → initialize answered", st.get("initialize_ms")))
    out.append(_stats_row("5. exec → presence visible in Redis", st.get("presence_ms")))
    out.append("")
    if lat.get("ratio_p50"):
        out.append(f"- Latency ratio to the floor, p50/p50: **{lat['ratio_p50']:.1f}×**.")
    steps = lat.get("steps_p50_ms")
    if steps:
        out.append("- 1. Where one message's time goes: p50 of each step, from the marks "
                   "`bridge/trace.py` writes when `BRIDGE_TRACE_DIR` is set (CLOCK_MONOTONIC, "
                   "shared by the processes). The p50s of the steps need not add up to the "
                   "p50 of the whole. " + "; ".join(f"{step}: **{ms:.3f} ms**"
                                                   for step, ms in steps.items()) + ".")
    tput = s.get("throughput", {})
    if "msg_per_s" in tput:
        out.append(
            f"- 2. Throughput one to one: **{tput['msg_per_s']:,.0f} msg/s** delivered to B "
            f"({tput['messages']:,} messages, {tput['window']} tool calls in flight; calls "
            f"returned at {tput['calls_per_s']:,.0f}/s); lost {tput['lost']}, duplicates "
            f"{tput['duplicates']}, per-sender order {'kept' if tput['order_ok'] else 'BROKEN'}"
            f" (checked).")
        cpu = tput.get("cpu_us_per_message")
        if cpu:
            out.append("- 2. CPU time per message during that run (from /proc, so it holds "
                       "on a busy machine): " + ", ".join(
                           f"{CPU_LABELS.get(who, who)} {us:.0f} µs"
                           for who, us in cpu.items()) + ".")
        if tput.get("fcall_us"):
            out.append(f"- 2. Redis per delivered message: {cpu.get('redis', 0):.0f} µs of its "
                       f"CPU (/proc); the send function {tput['fcall_us']:.1f} µs a call "
                       f"(INFO commandstats).")
        if tput.get("floor"):
            out.append(f"- 2. Floor: redis-py PUBLISH, 32 to a pipeline, to a redis-py "
                       f"subscriber in another process: {tput['floor']['msg_per_s']:,.0f} msg/s.")
    many = s.get("senders", {})
    if "msg_per_s" in many:
        out.append(
            f"- 2b. {many['senders']} senders to one receiver: **{many['msg_per_s']:,.0f} msg/s**"
            f" ({many['messages']:,} messages, {many['window_each']} calls in flight each); "
            f"lost {many['lost']}, duplicates {many['duplicates']}, per-sender order "
            f"{'kept' if many['order_ok'] else 'BROKEN'}; CPU per message " + ", ".join(
                f"{who} {us:.0f} µs" for who, us in many["cpu_us_per_message"].items()) + ".")
    for n, f in sorted(_sized(s.get("fanout")).items(), key=lambda kv: int(kv[0])):
        cpu_each = f.get("receiver_cpu_us")
        out.append(f"- 3. Fan-out to {n}: lost {f['lost']}; starting the new agents "
                   f"concurrently took {f['start_all_s']:.1f} s"
                   + (f"; each receiver used {cpu_each:.0f} µs of CPU per broadcast."
                      if cpu_each else "."))
    for n, p in sorted(_sized(s.get("presence")).items(), key=lambda kv: int(kv[0])):
        out.append(
            f"- 4. {int(n):,} agents: MEMORY USAGE of one agent hash {p['memory_usage_hash']} B"
            f" + its ZSET share {p['zset_share']:.0f} B = {p['per_agent_memory_usage']:.0f} B; "
            f"its cursor key {p['memory_usage_cursor']} B more; INFO used_memory delta / N "
            f"{p['info_delta_per_agent']:.0f} B.")
    imp = st.get("import")
    if imp:
        out.append(
            f"- 5. `python -X importtime -c 'import bridge.mcp.server'`: "
            f"{imp['total_ms']:.0f} ms of imports (bridge.mcp.server cumulative "
            f"{imp['bridge_server_cumulative_ms']:.0f} ms; "
            f"the whole `python -c` {imp['wall_ms_python_c']:.0f} ms). Largest top-level "
            f"imports: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in imp["top_level"][:6]) + ".")
    cu = s.get("catchup", {})
    if "from_exec_s" in cu:
        out.append(catchup_line(cu))
    du = s.get("durability", {})
    if "answer_p50_cost_ms" in du:
        rows = ", ".join(
            f"={n}: push p50 {du[n]['push']['p50']:.2f} / p99 {du[n]['push']['p99']:.2f} ms, "
            f"answer p50 {du[n]['answer']['p50']:.2f} / p99 {du[n]['answer']['p99']:.2f} ms"
            for n in ("0", "1"))
        out.append(
            f"- 7. BRIDGE_MIN_REPLICAS against a primary and one replica on this machine (Redis "
            f"{du['version']}): {rows}. The WAIT adds **{du['answer_p50_cost_ms']:.2f} ms** to "
            f"the sender's answer at p50 (the push does not wait for it); "
            f"{du['1']['durable']} of {du['1']['messages']} confirmed durable.")
    errors = {k: v["error"] for k, v in s.items() if isinstance(v, dict) and "error" in v}
    for name, error in errors.items():
        out.append(f"- **{name} failed**: `{error}`")
    for plot in plots:
        out += ["", f"![{Path(plot).stem}]({Path(plot).name})"]
    profile = tput.get("profile") if isinstance(tput, dict) else None
    out += ["", "## Profile of the throughput run", ""]
    if profile and "sender" in profile:
        out.append(
            f"py-spy ({profile['rate_hz']} Hz, {profile['seconds']} s, `--nonblocking`, idle "
            f"threads excluded) on A's and B's `bridge serve` during a second throughput pass "
            f"({profile['msg_per_s_while_profiled']:,.0f} msg/s while profiled). \"busy\" is "
            f"samples / (seconds × rate): the share of the time the process was on CPU "
            f"in Python (1.0 = one core saturated).")
        for role in ("sender", "receiver"):
            p = profile[role]
            out += ["", f"**{role}** ({'A' if role == 'sender' else 'B'}): {p['samples']} "
                    f"samples, busy ≈ {p['busy_fraction']}", "",
                    "| self % | frame (leaf) |", "|---|---|"]
            out += [f"| {pct} | `{frame}` |" for frame, pct in p["top_self"][:10]]
            out += ["", "| inclusive % | frame |", "|---|---|"]
            out += [f"| {pct} | `{frame}` |" for frame, pct in p["top_inclusive"][:18]]
    else:
        out.append("Not profiled in this run (`make bench ARGS=--profile` does).")
    if NOTES.exists():
        out += ["", NOTES.read_text().strip()]
    return "\n".join(out) + "\n"


def plots(results: dict[str, Any], directory: Path) -> list[str]:
    """latency CDF (bridge vs floor) and fan-out vs N; [] with a note without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, so no plots (`pip install -e '.[dev]'`)")
        return []
    written = []
    s = results["scenarios"]
    samples = (s.get("latency") or {}).get("samples")
    if samples:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for label, values in (("bridge send_message → channel push", samples["bridge"]),
                              ("floor: redis-py PUBLISH → receive", samples["floor"])):
            ordered = sorted(values)
            ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.plot(ordered, ys, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log)")
        ax.set_ylabel("fraction of messages")
        ax.set_title("One-to-one latency CDF")
        ax.axvline(0.5, color="grey", linestyle=":", label="target p50 0.5 ms")  # targets()
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        path = directory / "benchmarks-latency.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    fan = _sized(s.get("fanout"))
    points = sorted((int(n), f["time_to_last"]) for n, f in fan.items()
                    if n.isdigit() and f["time_to_last"].get("n"))
    if points:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ns = [n for n, _ in points]
        ax.plot(ns, [st["p50"] for _, st in points], marker="o", label="p50")
        ax.plot(ns, [st["p99"] for _, st in points], marker="o", label="p99")
        floors = [(n, fan[str(n)].get("floor_time_to_last", {}).get("p50")) for n in ns]
        if all(p50 is not None for _, p50 in floors):
            ax.plot(ns, [p50 for _, p50 in floors], marker="s", linestyle="--",
                    label="floor p50: PUBLISH to N redis-py subscriber processes")
        floor_p99s = [fan[str(n)].get("floor_time_to_last", {}).get("p99") for n in ns]
        if all(p99 is not None for p99 in floor_p99s):  # the target of targets(): 2x its floor
            ax.plot(ns, [2 * p99 for p99 in floor_p99s], color="grey", linestyle=":",
                    label="target p99: 2x the floor's p99")
        ax.set_xlabel("agents receiving the broadcast")
        ax.set_ylabel("time until the last has it, ms")
        ax.set_title("Fan-out")
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = directory / "benchmarks-fanout.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written
