#!/usr/bin/env python3
"""Checks shoal's layering (docs/ARCHITECTURE.md): a src/ folder may include
only folders below it, and the pure layers (raft, resp, common) include no
I/O, threads, clocks or randomness. Exits 1 and lists every violation."""
import pathlib
import re
import sys

ORDER = ["common", "resp", "raft", "storage", "kv", "replica", "node", "cluster", "server",
         "http", "cli"]
PURE = {"raft", "resp"}
FORBIDDEN_IN_PURE = re.compile(
    r'#\s*include\s*[<"](asio|rocksdb|thread|mutex|chrono|random|fstream|sys/socket|condition_variable|future)')
PROJECT_INCLUDE = re.compile(r'#\s*include\s*"([a-z_]+)/')


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent / "src"
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".h", ".cc"):
            continue
        layer = path.relative_to(root).parts[0]
        if layer not in ORDER:
            problems.append(f"{path}: folder '{layer}' is not a known layer")
            continue
        rank = ORDER.index(layer)
        is_test = path.name.endswith("_test.cc")
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = PROJECT_INCLUDE.match(line.strip())
            if m and m.group(1) in ORDER and ORDER.index(m.group(1)) > rank and not is_test:
                problems.append(f"{path}:{n}: {layer} may not include {m.group(1)}/ (a higher layer)")
            if layer == "common" and m and m.group(1) != "common":
                problems.append(f"{path}:{n}: common includes no other layer")
            if layer in PURE and FORBIDDEN_IN_PURE.match(line.strip()):
                problems.append(f"{path}:{n}: {layer} must stay free of I/O, threads, clocks, randomness")
    for p in problems:
        print(p)
    print(f"layer check: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
