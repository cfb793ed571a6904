"""Compare the numbers of two figures/ folders (e.g. before and after a refactor); timings are counted apart.

    python benchmarks/compare_figures.py OLD_FIGURES_DIR NEW_FIGURES_DIR

Every JSON value is compared exactly (a refactor that must not change results should give 0 differing values);
wall times, throughputs and resume statistics always differ between runs and are only counted.
"""
import json, math, sys
from pathlib import Path

TIMING = ("runtime", "samples_per_second", "steps_per_second", "seconds", "per_second", "recorded_at", "wall", "merge_seconds", "train_seconds", "threads", "resumed",
          "tokens_this_run", "device")

def walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append((path + "." + k, "missing in " + ("old" if k not in a else "new"), None)); continue
            walk(a[k], b[k], path + "." + k, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((path, f"length {len(a)} vs {len(b)}", None)); return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", out)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
            out.append((path, a, b))
    elif a != b:
        out.append((path, repr(a)[:80], repr(b)[:80]))

old, new = Path(sys.argv[1]), Path(sys.argv[2])
names = sorted({p.name for p in old.glob("*.json")} | {p.name for p in new.glob("*.json")})
total = 0
for name in names:
    if not (old / name).exists() or not (new / name).exists():
        print(f"{name}: only in {'new' if not (old / name).exists() else 'old'}"); continue
    out = []
    walk(json.loads((old / name).read_text()), json.loads((new / name).read_text()), "", out)
    timing = [d for d in out if any(t in d[0] for t in TIMING)]
    real = [d for d in out if d not in timing]
    total += len(real)
    maxrel = 0.0
    for p, a, b in real:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            maxrel = max(maxrel, abs(a - b) / max(abs(a), abs(b), 1e-300))
    print(f"{name}: {len(real)} differing values (max relative {maxrel:.2e}), {len(timing)} timing values differ")
    for d in real[:8]:
        print("   ", d)
print("TOTAL differing non-timing values:", total)
