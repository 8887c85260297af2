"""The layers and their one rule (CONTRIBUTING.md): imports point one way. bridge.redis (how
bridge talks to Redis) imports none of bridge.room, bridge.mcp, bridge.ops; bridge.room (a room
on Redis) imports neither bridge.mcp (`bridge serve`) nor bridge.ops (the operator commands);
and those two do not import each other. Read from the source with `ast`, imports inside
functions included."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import bridge

PACKAGE = Path(bridge.__file__).parent
# layer -> the bridge packages/modules it must not import
FORBIDDEN = {
    "redis": ("bridge.room", "bridge.mcp", "bridge.ops", "bridge.cli"),
    "room": ("bridge.mcp", "bridge.ops", "bridge.cli"),
    "mcp": ("bridge.ops", "bridge.cli"),
    "ops": ("bridge.mcp", "bridge.cli"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, package: str) -> set[str]:
    """Every module an import statement anywhere in the source names, function bodies
    included (`from a import b` gives a and a.b: b may be a module); relative imports are
    resolved against ``package``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def violations(path: Path, source: str | None = None) -> list[str]:
    """The imports of the module at ``path`` (its text, or ``source``) that its layer forbids."""
    layer = path.relative_to(PACKAGE).parts[0]
    banned = FORBIDDEN.get(layer, ())
    package = module_name(path.parent / "__init__.py")
    text = path.read_text() if source is None else source
    return sorted(name for name in imports(text, package)
                  if any(name == b or name.startswith(b + ".") for b in banned))


def test_every_layer_exists_and_holds_modules():
    for layer in FORBIDDEN:
        assert len(list((PACKAGE / layer).glob("*.py"))) > 2, layer


def test_no_module_imports_across_its_layer_boundary():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30
    found = {module_name(path): violations(path) for path in modules}
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_checker_sees_lazy_and_relative_imports():
    source = ("def f():\n    from bridge.mcp import server\n    import bridge.ops.tail\n"
              "    from ..ops import doctor\n")
    names = imports(source, "bridge.room")
    assert {"bridge.mcp.server", "bridge.ops.tail", "bridge.ops.doctor"} <= names


def test_the_checker_catches_each_rule_broken():
    # a module of each layer that imports what its layer may not: each is caught
    broken = {
        "redis": ("from bridge.room.keys import Keys\n"
                  "def f():\n    from ..room import envelope\n    import bridge.mcp.server\n"),
        "room": "from bridge.ops import doctor\nfrom ..mcp import tools\n",
        "mcp": "import bridge.ops.tail\n",
        "ops": "from bridge.mcp.server import serve\n",
    }
    found = {layer: violations(PACKAGE / layer / "synthetic.py", source)
             for layer, source in broken.items()}
    assert found == {
        "redis": ["bridge.mcp.server", "bridge.room", "bridge.room.envelope",
                  "bridge.room.keys", "bridge.room.keys.Keys"],
        "room": ["bridge.mcp", "bridge.mcp.tools", "bridge.ops", "bridge.ops.doctor"],
        "mcp": ["bridge.ops.tail"],
        "ops": ["bridge.mcp.server", "bridge.mcp.server.serve"],
    }
    # and what a layer may import passes: the room uses the Redis wing
    assert violations(PACKAGE / "room" / "synthetic.py",
                      "from bridge.redis.clients import make_client\n") == []


def test_importing_the_redis_wing_loads_nothing_of_the_room():
    # beyond what the shared bridge.settings loads itself (the room's name patterns)
    code = ("import json, sys, pkgutil, importlib, bridge.settings, bridge.redis\n"
            "shared = sorted(n for n in sys.modules if n.startswith('bridge.room'))\n"
            "for m in pkgutil.iter_modules(bridge.redis.__path__, 'bridge.redis.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(json.dumps([shared, sorted(n for n in sys.modules if n.startswith('bridge'))]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    shared, loaded = json.loads(done.stdout)
    assert "bridge.redis.clients" in loaded  # every module of the wing was imported
    assert [n for n in loaded if n.startswith("bridge.room") and n not in shared] == []
    assert [n for n in loaded if n.startswith(("bridge.mcp", "bridge.ops", "bridge.cli"))] == []


def test_the_redis_wing_uses_redis_py_under_its_own_name():
    # bridge/redis/ is bridge.redis: inside it, `import redis` is still redis-py
    import redis

    import bridge.redis.clients

    assert Path(redis.__file__).parent.name == "redis"
    assert Path(redis.__file__).parent.parent != PACKAGE
    assert bridge.redis.clients.Redis.__module__.startswith("redis.")


def test_importing_the_room_layer_loads_nothing_of_mcp_or_ops():
    code = ("import json, sys, pkgutil, importlib, bridge.room\n"
            "for m in pkgutil.iter_modules(bridge.room.__path__, 'bridge.room.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(json.dumps(sorted(n for n in sys.modules if n.startswith('bridge'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert "bridge.room.connection" in loaded  # every room module was imported
    assert [n for n in loaded if n.startswith(("bridge.mcp", "bridge.ops", "bridge.cli"))] == []


def test_no_import_cycles_between_modules():
    # e.g. settings once imported the Redis clients (lazily) that import settings
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {n for n in imports(path.read_text(), module_name(path.parent / "__init__.py"))
                    if n in modules and n != name}
             for name, path in modules.items()}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert [name for name in graph if name in reachable(name)] == []


def test_an_agent_never_loads_the_operators_output_library():
    # rich (~15 ms to import) is for the operator commands; `bridge serve` starts without it
    code = ("import sys, bridge.cli, bridge.mcp.server, bridge.mcp.tools\n"
            "print('rich' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"
