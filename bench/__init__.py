"""Benchmarks (``make bench``): each ``bench/bench_*.py`` module is runnable alone and defines
``run() -> list[dict]`` returning records ``{name, value, unit, target, baseline_name,
baseline_value, ratio}``. Ratios are measured side by side in one run; nothing here is a test.
"""
