"""
The package's layering, checked from the source: each module's imports
(module level and inside functions) are parsed with ast, and the rules of
ARCHITECTURE.md are asserted, so CI keeps them.

- orb.protocol is pure: no role, no twisted.internet, nothing of orb outside itself;
- orb.exec is a leaf: nothing of orb outside itself but orb.protocol.codes;
- orb.net is shared by the roles and imports neither of them;
- the roles do not import each other;
- no import cycles between packages.
"""

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "orb")


def modules():
    """{dotted module name: path} for every module of the orb package."""
    found = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


def imports_of(module, path):
    """Every module name ``module`` imports, resolved to absolute dotted names."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # from pkg import module
    return names


def package_of(name):
    """orb.tracker.registry -> orb.tracker; orb.identity -> orb.identity."""
    parts = name.split(".")
    return ".".join(parts[:2])


def within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


class LayeringTests(SynchronousTestCase):
    def setUp(self):
        self.modules = modules()
        known = set(self.modules)
        self.graph = {}
        for module, path in self.modules.items():
            # Keep only names that are orb modules (``from orb.x import func`` adds non-modules too).
            self.graph[module] = {n for n in imports_of(module, path) if n in known or not within(n, "orb")}

    def offenders(self, prefix, allowed):
        bad = []
        for module, names in self.graph.items():
            if not within(module, prefix):
                continue
            for name in names:
                if not allowed(name):
                    bad.append(f"{module} imports {name}")
        return sorted(bad)

    def test_protocol_is_pure(self):
        """orb.protocol imports no role, no reactor, and nothing of orb outside itself."""
        self.assertEqual(self.offenders(
            "orb.protocol",
            lambda n: not within(n, "twisted.internet") and (not within(n, "orb") or within(n, "orb.protocol")),
        ), [])

    def test_exec_is_a_leaf(self):
        """orb.exec imports nothing of orb outside itself except the result codes."""
        self.assertEqual(self.offenders(
            "orb.exec",
            lambda n: not within(n, "orb") or within(n, "orb.exec") or n == "orb.protocol.codes"
            or n == "orb.protocol",  # "from orb.protocol import codes"
        ), [])

    def test_net_serves_both_roles_and_imports_neither(self):
        """orb.net, shared by tracker and peer, imports neither role nor the jail."""
        self.assertEqual(self.offenders(
            "orb.net", lambda n: not any(within(n, r) for r in ("orb.tracker", "orb.peer", "orb.exec"))), [])

    def test_roles_do_not_import_each_other(self):
        """The tracker never imports the peer package, nor the peer the tracker package."""
        self.assertEqual(self.offenders("orb.tracker", lambda n: not within(n, "orb.peer")), [])
        self.assertEqual(self.offenders("orb.peer", lambda n: not within(n, "orb.tracker")), [])

    def test_no_cycles_between_packages(self):
        """No chain of imports leads from a package back to itself."""
        edges = {}
        for module, names in self.graph.items():
            source = package_of(module)
            for name in names:
                if within(name, "orb") and package_of(name) != source and package_of(name) != "orb":
                    edges.setdefault(source, set()).add(package_of(name))
        cycles = []

        def visit(node, path):
            for nxt in sorted(edges.get(node, ())):
                if nxt == path[0]:
                    cycles.append(" -> ".join(path + [nxt]))
                elif nxt not in path:
                    visit(nxt, path + [nxt])

        for start in sorted(edges):
            visit(start, [start])
        self.assertEqual(cycles, [])

    def test_the_checker_sees_imports_inside_functions(self):
        """An import hidden in a function body, or relative, counts: the rules cannot be dodged."""
        path = self.mktemp() + ".py"
        with open(path, "w") as f:
            f.write("def f():\n    from orb.tracker import registry\n    from ..peer.wiring import Peer\n")
        names = imports_of("orb.protocol.example", path)
        self.assertIn("orb.tracker.registry", names)
        self.assertIn("orb.peer.wiring", names)
