"""A room on Redis: key names, the envelope, the Redis clients, presence, sending, receiving
with catch-up and the cursor, signing. Nothing here knows about MCP or terminals: it imports
neither bridge.mcp nor bridge.ops (tests/test_layers.py checks)."""
