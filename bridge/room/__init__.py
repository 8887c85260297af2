"""A room on Redis: key names, the envelope, signing, presence, sending, receiving with
catch-up and the cursor, retention, the room's functions library and the send batcher.
How it reaches Redis (clients, Cluster, Sentinel, the embedded server, pub/sub, Lua calls) is
bridge.redis, which it uses and which knows nothing of rooms. Nothing here knows about MCP or
terminals: it imports neither bridge.mcp nor bridge.ops (tests/test_layers.py checks)."""
