"""`bridge serve`: the stdio transport, the JSON-RPC session, the tools, and delivery into
the client (channel notifications, the session inbox, pull). Uses bridge.room; never
bridge.ops (tests/test_layers.py checks)."""
