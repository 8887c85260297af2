"""bridge's benchmark harness (issue 5): `make bench`, or

    .venv/bin/python -m bench [--quick] [--smoke] [--profile] [--only latency,fanout]
                              [--json PATH] [--no-docs]

Starts its own redis-server on a free port and real `bridge serve` processes; every wait has a
deadline, and every process it started is killed when it ends (also on Ctrl-C or an error).
Results: bench/results/latest.json, docs/benchmarks.md and two PNG plots in docs/. Exits
with status 1 when a scenario failed, or lost, duplicated or reordered a message (each printed
as `DELIVERY FAILED: ...`, and at the top of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anyio

from bench import report
from bench.common import Processes, RedisServer, machine
from bench.scenarios import FULL, QUICK, SMOKE, Context, new_tmp
from bench.scenarios import SCENARIOS as SCENARIOS_OF_ISSUE_5
from bench.senders import senders

# several senders right after one to one (issue 16)
SCENARIOS = {name: run for name, run in [*list(SCENARIOS_OF_ISSUE_5.items())[:2],
                                         ("senders", senders),
                                         *list(SCENARIOS_OF_ISSUE_5.items())[2:]]}

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DEADLINE = {"latency": 120, "throughput": 180, "senders": 180, "fanout": 240,
                     "presence": 120, "startup": 90, "catchup": 240, "shards": 240,
                     "durability": 120}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~30 s pass with smaller counts")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts, a few seconds: does the harness work at all")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy A's and B's servers during a throughput pass")
    parser.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs",
                        help="where benchmarks.md and the plots go")
    parser.add_argument("--no-docs", action="store_true", help="write only the JSON")
    parser.add_argument("--replace-in-docs", action="store_true",
                        help="with --only " + ",".join(report.LINE_OF) + ": replace only that "
                        "scenario's line of the existing benchmarks.md, marked as measured "
                        "alone (command, date, load), instead of rewriting the page")
    return parser.parse_args(argv)


async def run_all(ctx: Context, names: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        print(f"\n== {name}", flush=True)
        started = time.perf_counter()
        try:
            with anyio.fail_after(SCENARIO_DEADLINE[name]):
                results[name] = await SCENARIOS[name](ctx)
        except Exception as e:  # one broken scenario must not hide the others
            traceback.print_exc()
            results[name] = {"error": describe(e)[:1000]}
        finally:
            ctx.procs.kill_all()  # whatever a failed scenario left behind
        results[name]["elapsed_s"] = time.perf_counter() - started
        print(f"   ({results[name]['elapsed_s']:.1f} s)", flush=True)
    return results


def describe(error: BaseException) -> str:
    """The leaf exceptions of an exception group, or the exception itself."""
    if isinstance(error, BaseExceptionGroup):
        leaves = sorted({describe(e) for e in error.exceptions})
        return "; ".join(leaves)
    return f"{type(error).__name__}: {error}"


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    names = list(SCENARIOS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
        return 2
    page = args.docs / "benchmarks.md"
    if args.replace_in_docs and (not args.only or set(names) - set(report.LINE_OF)
                                 or not page.exists() or args.no_docs):
        print(f"--replace-in-docs needs --only with {', '.join(report.LINE_OF)} and an "
              f"existing {page}")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    procs = Processes()
    started = time.time()
    host = machine()  # now, for the load average at the start
    with new_tmp() as tmp:
        server = RedisServer(Path(tmp))
        try:
            server.start()
            redis_version = server.version()
            print(f"bench ({mode}): redis-server {redis_version} on port {server.port}; "
                  f"scenarios {', '.join(names)}")
            ctx = Context(redis=server, procs=procs, tmp=Path(tmp), sizes=sizes,
                          profile=args.profile)
            scenarios = anyio.run(run_all, ctx, names)
        finally:
            procs.kill_all()
            server.stop()
    from bridge import __version__

    results: dict[str, Any] = {
        "meta": {"command": command, "mode": mode, "redis_version": redis_version,
                 "bridge_version": __version__, "machine": host,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
                 "duration_s": time.time() - started, "sizes": vars(sizes),
                 "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "scenarios": scenarios,
    }
    results["targets"] = report.targets(results)
    print("\n== targets")
    for t in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        print(f"  {t['what']:<55} {t['target']:>14}  {t['shown']}  -> {verdict}")
        if t.get("why"):
            print(f"      why: {t['why']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {args.json}")
    failed = [n for n, r in scenarios.items() if "error" in r]
    if args.replace_in_docs:
        try:
            page.write_text(report.replace_lines(page.read_text(), results))
            print(f"replaced the line(s) of {', '.join(names)} in {page}")
        except ValueError as e:
            print(f"{page} left as is: {e}")
            failed = failed or ["--replace-in-docs"]
    elif not args.no_docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        plots = report.plots(results, args.docs)
        (args.docs / "benchmarks.md").write_text(report.markdown(results, plots))
        for path in [args.docs / "benchmarks.md", *plots]:
            print(f"wrote {path}")
    print(f"done in {time.time() - started:.0f} s")
    if failed:
        print(f"FAILED scenarios: {', '.join(failed)}")
    problems = report.delivery_problems(scenarios)
    for problem in problems:  # a lost, duplicated or reordered message fails the run
        print(f"DELIVERY FAILED: {problem}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
