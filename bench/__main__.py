"""Run every benchmark, write ``bench/out/bench.json`` and print a table.

``python -m bench`` runs all ``bench_*`` modules; ``python -m bench NAME...`` runs the named
ones (module names without the ``bench_`` prefix).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
OUT = HERE / "out" / "bench.json"
FIELDS = ("name", "value", "unit", "target", "baseline_name", "baseline_value", "ratio")


def machine_info() -> dict:
    import numpy
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str]) -> int:
    names = [p.stem for p in sorted(HERE.glob("bench_*.py"))]
    if argv:
        names = [n if n.startswith("bench_") else f"bench_{n}" for n in argv]
    records: list[dict] = []
    failed: list[str] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"bench.{name}")
            recs = mod.run()
        except Exception as exc:  # a broken benchmark must not hide the others
            failed.append(f"{name}: {exc!r}")
            continue
        for r in recs:
            records.append({k: r.get(k) for k in FIELDS} | {"module": name, **r})
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text())["records"] if (argv and OUT.exists()) else []
    keep = [r for r in previous if r.get("module") not in {f"{n}" for n in names}]
    OUT.write_text(json.dumps({"machine": machine_info(), "records": keep + records,
                               "failed": failed}, indent=2))  # fmt: skip
    table = Table(title=f"pcm-twin benchmarks ({OUT})")
    for col in ("name", "value", "unit", "target", "baseline", "ratio"):
        table.add_column(col)
    for r in keep + records:

        def fmt(v):
            return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

        base = f"{r['baseline_name']}={fmt(r['baseline_value'])}" if r.get("baseline_name") else "-"
        table.add_row(r["name"], fmt(r["value"]), fmt(r["unit"]), fmt(r["target"]), base,
                      fmt(r["ratio"]))  # fmt: skip
    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the names into 80 columns
        console = Console(width=160)
    console.print(table)
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
