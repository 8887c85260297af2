"""Every command of the `bridge` command line, in the order `bridge --help` lists them. Each
module beside this one holds a group's flags and runners; a runner imports its layer on use,
so that `bridge serve` starts without the operator modules."""

from __future__ import annotations

from bridge.cli.agent import (
    acl_flags,
    functions_flags,
    run_acl,
    run_doctor,
    run_functions,
    run_redis,
    run_serve,
    serve_flags,
)
from bridge.cli.board import (
    claims_flags,
    guard_flags,
    run_claims,
    run_guard,
    run_tasks,
    tasks_flags,
)
from bridge.cli.command import Command, room_flags
from bridge.cli.room import (
    demo_flags,
    history_flags,
    run_demo,
    run_history,
    run_send,
    run_tail,
    run_web,
    run_who,
    send_flags,
    tail_flags,
    web_flags,
    who_flags,
)
from bridge.cli.team import run_team, team_flags

COMMANDS = {command.name: command for command in (
    Command("serve", "run the MCP server for one agent (stdio)", serve_flags, run_serve,
            for_a_person=False),
    Command("redis", "run the embedded per-user Redis in the foreground", lambda parser: None,
            run_redis, for_a_person=False),
    Command("acl", "print the Redis ACL rule for one agent's least-privilege user",
            acl_flags, run_acl, for_a_person=False,
            description="Print the ACL SETUSER line (or, with --format file, a users.acl line) "
                        "for user bridge-ROOM-AGENT: only room ROOM's keys and channels, only "
                        "the commands bridge runs, and of Lua only this bridge version's "
                        "functions (FCALL; no EVAL, EVALSHA, SCRIPT or FUNCTION). Needs Redis "
                        "7.0 or newer. Run it as a Redis admin (e.g. pipe it into redis-cli), "
                        "and load bridge's functions once (bridge functions load); the agent's "
                        "URL is printed on stderr."),
    Command("who", "the agents in the room: role, host, delivery, status", who_flags, run_who,
            description="The agents in the room. Expired agents are pruned. An empty room is "
                        "an error (exit 1), except with --json."),
    Command("tail", "follow the room's messages and events live", tail_flags, run_tail,
            follows=lambda args: True,
            description="Live traffic of the room: messages from the log, joined/left/status "
                        "events. Follows Redis reconnects without missing or repeating a "
                        "message. Ctrl-C stops."),
    Command("send", "join briefly as NAME and send a message", send_flags, run_send,
            follows=lambda args: bool(args.wait),
            description="Join the room as NAME (pull delivery, role human), send TEXT to TO, "
                        "and leave. With --wait, print what arrives for NAME until Ctrl-C or "
                        "--timeout."),
    Command("history", "what the room log holds, oldest first", history_flags, run_history),
    Command("tasks", "the room's task board: list, show, add, assign, done", tasks_flags,
            run_tasks, description="The room's tasks, the ones not done first; show one with its "
                                "history; add, assign or close one as the operator (or --as "
                                "NAME), joining briefly only to tell whom it concerns."),
    Command("claims", "the room's live file claims: who holds which paths, and why",
            claims_flags, run_claims),
    Command("guard", "a git pre-commit hook that respects other agents' exclusive file claims",
            guard_flags, run_guard,
            description="install: put the hook into a repository (--repo; --force replaces "
                        "a hook not bridge's). check: what the hook runs, with the staged "
                        "paths; exit 1 if one is under another agent's exclusive claim. "
                        "Redis unreachable: one line, exit 0."),
    Command("web", "watch and steer the room from a browser", web_flags, run_web,
            follows=lambda args: True,
            description="Serve a page per room (and a list of rooms): the agents, the "
                        "conversation live, history with search, who talks to whom, and a "
                        "form to send as an operator. Prints the address to open; it carries "
                        "the token sending needs (BRIDGE_WEB_TOKEN, or a new one each run). "
                        "Needs the web extra: pip install 'bridge-agents[web]'."),
    Command("demo", "bridge's main job played by three scripted agents (no model, no API key)",
            demo_flags, run_demo),
    Command("doctor", "check that bridge can work with this Redis", room_flags, run_doctor,
            description="One line per check, with a fix for each problem. Exits 1 if bridge "
                        "cannot work."),
    Command("functions", "bridge's Redis functions: load them as an admin, or show them",
            functions_flags, run_functions,
            description="bridge runs its Lua as a Redis Functions library (Redis 7.0 or "
                        "newer), named for its version (bridge_VERSION). A user that may load "
                        "functions (the embedded Redis, the default user) has it loaded by "
                        "bridge when needed; for agents under `bridge acl` users an admin "
                        "loads it once per bridge version. Other versions' libraries are left "
                        "alone."),
    Command("team", "run a team of Claude Codes (or Codexes) in tmux, one pane each, plus "
                    "bridge tail",
            team_flags, run_team,
            description="Open a tmux session with one interactive Claude Code per agent (Codex "
                        "for NAME:ROLE:codex), each with bridge as its MCP server and its role "
                        "prompt, plus a pane running bridge tail. Messages reach a Claude Code "
                        "through its session inbox (2.1.224 or newer): no flag, no dialog; a "
                        "Codex through codex queue, once its first bridge tool call. The "
                        "environment (ANTHROPIC_*, BRIDGE_REDIS_URL, ...) passes through to "
                        "every pane; without BRIDGE_REDIS_URL all use the embedded Redis."),
)}
