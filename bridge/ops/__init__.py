"""The operator commands (who, history, send, tail, doctor, acl, team) and their terminal
output. Uses bridge.room; never bridge.mcp (tests/test_layers.py checks)."""
