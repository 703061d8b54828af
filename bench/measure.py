"""Run one Python callable in a fresh process and report wall time and peak memory.

``python bench/measure.py MODULE:FUNCTION [JSON-KWARGS]`` prints one JSON line
``{"seconds": ..., "peak_rss_mib": ..., "result": ...}``; peak RSS is the child's own
``ru_maxrss``, so measurements do not leak into each other.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time

if __name__ == "__main__":
    target, kwargs = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    module, func = target.split(":")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    fn = getattr(importlib.import_module(module), func)
    started = time.perf_counter()
    result = fn(**kwargs)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1), "result": result})
    )
