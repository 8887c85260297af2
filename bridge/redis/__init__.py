"""How bridge talks to Redis: which server and its client (one server, a Cluster, Sentinel, the
embedded server), connections tuned for the hot path (quick writes, the lane), pub/sub readers
(the subscriber, the feed), typed Lua calls, paging through a stream, and the durable-write WAIT.

Plumbing only: nothing here knows about rooms, envelopes or agents. It imports none of
bridge.room, bridge.mcp, bridge.ops (tests/test_layers.py checks); the room layer uses it.
Shared with every layer: bridge.settings and bridge.errors.

Within this package ``import redis`` is redis-py: imports are absolute, and this package is
``bridge.redis``, never a top-level ``redis``."""
