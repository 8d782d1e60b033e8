#!/usr/bin/env python3
"""Prints the import graph between the files of one crate and fails if it has a cycle.

Usage: scripts/module-graph.py crates/kilat-core [--dot]

An edge A -> B means a file A names a path into B (`use crate::b::..`, `crate::b::x(..)`,
`super::..` from a child module, or a child module named in a `use` of its parent). `mod x;`
declarations are not edges: declaring a child is not depending on it. Comments are ignored.
"""
import os
import re
import sys


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)


def main():
    crate = sys.argv[1].rstrip("/")
    src = os.path.join(crate, "src")
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(src, path)] = path
    modules = set(files)

    def resolve(parts):
        """The longest known module prefix of a path."""
        for n in range(len(parts), 0, -1):
            if tuple(parts[:n]) in modules:
                return tuple(parts[:n])
        return None

    edges = {m: set() for m in modules}
    for mod, path in files.items():
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"//[^\n]*", "", text)
        # Drop test modules: a unit test may use anything.
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        is_dir_module = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        base = mod if is_dir_module else mod[:-1]
        targets = []
        for match in re.finditer(r"\bcrate((?:::\w+)+)", text):
            targets.append(match.group(1).split("::")[1:])
        for match in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+|\{)", text):
            up = match.group(1).count("super::")
            parent = base[: len(base) - (up - 1)] if up > 1 else base
            rest = [] if match.group(2) == "{" else match.group(2).split("::")
            targets.append(list(parent) + rest)
        # `use child::X;` or `child::X` from a directory module.
        for match in re.finditer(r"(?<![\w:])(\w+)::[\w{]", text):
            if base + (match.group(1),) in modules and match.group(1) != mod[-1:]:
                targets.append(list(base) + [match.group(1)])
        # Braced groups: `use crate::{a::X, b::Y}`.
        for match in re.finditer(r"\bcrate::\{([^}]*)\}", text):
            for item in match.group(1).split(","):
                targets.append(item.strip().split("::"))
        for parts in targets:
            target = resolve(parts)
            if target is not None and target != mod and target != ():
                edges[mod].add(target)

    name = lambda m: "::".join(m) or "lib"
    if "--dot" in sys.argv:
        print("digraph {")
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print(f'  "{name(m)}" -> "{name(t)}";')
        print("}")
    else:
        for m in sorted(edges):
            print(f"{name(m):24} -> {', '.join(name(t) for t in sorted(edges[m]))}")

    # Cycle search (depth first, colours).
    colour, stack, cycles = {}, [], []

    def visit(m):
        colour[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if colour.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in colour:
                visit(t)
        stack.pop()
        colour[m] = 2

    for m in sorted(modules):
        if m not in colour:
            visit(m)
    if cycles:
        for cycle in cycles:
            print("cycle: " + " -> ".join(name(m) for m in cycle), file=sys.stderr)
        sys.exit(1)
    print(f"{crate}: {len(modules)} files, no cycle", file=sys.stderr)


if __name__ == "__main__":
    main()
