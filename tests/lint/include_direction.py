#!/usr/bin/python3
"""The layering of src/ (docs/DESIGN.md, "The picture"): each folder may include its own headers,
those of folders below it, and the public include/layercache/; never a folder beside or above it,
and no folder includes the facade's files (src/*.h). The CLI (tools/) and the Python bindings
(python/src/) include only the public headers and their own. Usage: include_direction.py SOURCE_DIR"""
import os
import re
import sys

# Lower number = lower layer. A folder includes only folders with a lower number (or itself).
RANK = {"util": 0, "io": 1, "format": 2, "compress": 2, "quant": 2, "tier": 3, "source": 3,
        "memory": 4, "disk": 4, "remote": 4, "gpu": 5, "hub": 5}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main(root):
    problems, seen = [], 0
    src = os.path.join(root, "src")
    for folder in sorted(os.listdir(src)):
        path = os.path.join(src, folder)
        if not os.path.isdir(path):
            continue
        if folder not in RANK:
            problems.append(f"src/{folder}/: a folder this check does not know; give it a rank")
            continue
        for name in sorted(os.listdir(path)):
            text = open(os.path.join(path, name), encoding="utf-8", errors="replace").read()
            for inc in INCLUDE.findall(text):
                seen += 1
                if inc.startswith("layercache/"):
                    continue
                target = inc.split("/")[0] if "/" in inc else None
                if target is None:
                    problems.append(f"src/{folder}/{name}: includes the facade's \"{inc}\"")
                elif target != folder and RANK.get(target, 99) >= RANK[folder]:
                    problems.append(f"src/{folder}/{name}: includes \"{inc}\" ({target}/ is not below "
                                    f"{folder}/)")
    for outside in ("tools", "python/src"):
        base = os.path.join(root, outside)
        own = set(os.listdir(base))
        for name in sorted(own):
            text = open(os.path.join(base, name), encoding="utf-8", errors="replace").read()
            for inc in INCLUDE.findall(text):
                seen += 1
                if not inc.startswith("layercache/") and inc not in own:
                    problems.append(f"{outside}/{name}: includes \"{inc}\", which is not a public header")
    if seen < 200:  # the check must see the sources it guards
        print(f"include_direction: only {seen} includes under {root}; wrong directory?", file=sys.stderr)
        return 1
    if problems:
        print("Includes that run against the layering (docs/DESIGN.md, \"The picture\"):", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"include_direction: {seen} includes checked, none runs up or sideways")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
