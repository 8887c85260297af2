"""What the tests run against, apart from the tests themselves: the MCP test client, drivers of
real Claude Code and Codex sessions and their fake model APIs, Redis Cluster and Sentinel
runners, network namespaces, the podman images, and scripts the tests start by path
(room_driver.py, inbox_crash.py, codex_probe_mcp.py). Several are stdlib-only scripts too:
``python3 tests/support/NAME.py`` or ``python3 -m tests.support.NAME`` from the repository."""
