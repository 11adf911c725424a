"""Reads the py-N.json / rs-N.json pairs compare.sh wrote and prints a
Markdown table: per figure, the median of each side's medians, the ratio
Rust/Python of each round (median, min-max), and the target from issue 5."""

import json
import statistics
import sys
from pathlib import Path

out, rounds = Path(sys.argv[1]), int(sys.argv[2])
py = [json.loads((out / f"py-{r}.json").read_text()) for r in range(1, rounds + 1)]
rs = [json.loads((out / f"rs-{r}.json").read_text()) for r in range(1, rounds + 1)]

# (label, path in results, target ratio (>=), or None)
FIGURES = [
    ("bus_publish_memory", ("bus_publish_memory",), 50),
    ("event_build_publish", ("event_build_publish",), 50),
    ("sink_query.query_hit_limit10", ("sink_query", "query_hit_limit10"), 1000),
    ("sink_query.query_miss_limit10", ("sink_query", "query_miss_limit10"), None),
    ("sink_query.count", ("sink_query", "count"), 1000),
    ("run_task_steps.k1000_steps_per_s", ("run_task_steps", "k1000_steps_per_s"), 100),
    ("run_task_steps.k100_steps_per_s", ("run_task_steps", "k100_steps_per_s"), None),
    ("run_task_steps.k3_runs_per_s", ("run_task_steps", "k3_runs_per_s"), None),
    ("scope_event", ("scope_event",), 10),
    ("registry_register", ("registry_register",), None),
]


def get(d, path):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d["median"] if isinstance(d, dict) and "median" in d else None


def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


print(f"Rust / Python, {rounds} alternating rounds, mode {rs[0]['mode']}; "
      f"machine: {rs[0]['machine'].get('nproc')} x {rs[0]['machine'].get('cpu_model')}\n")
print("| figure | python (median) | rust (median) | ratio median | ratio min-max | target | met |")
print("|---|---:|---:|---:|---:|---:|:---:|")
for label, path, target in FIGURES:
    p = [get(d["results"], path) for d in py]
    r = [get(d["results"], path) for d in rs]
    if None in p or None in r:
        print(f"| {label} | - | - | - | - | - | - |")
        continue
    ratios = [b / a for a, b in zip(p, r)]
    rm = statistics.median(ratios)
    met = "-" if target is None else ("yes" if rm >= target else "no")
    tgt = "-" if target is None else f">= {target}x"
    print(f"| {label} | {fmt(statistics.median(p))} | {fmt(statistics.median(r))} | {rm:,.1f}x | "
          f"{min(ratios):,.1f}-{max(ratios):,.1f}x | {tgt} | {met} |")

# A replayed K=1000 track (no model calls) against the reference's replay of
# the same track, with both sides' model-driven K=1000 beside it.
replay_py = [out / f"py-replay-{r}.json" for r in range(1, rounds + 1)]
if all(f.exists() for f in replay_py):
    p = [get(json.loads(f.read_text())["results"], ("run_task_replay_k1000",)) for f in replay_py]
    r = [get(d["results"], ("run_task_replay_k1000",)) for d in rs]
    if None not in p and None not in r:
        ratios = [b / a for a, b in zip(p, r)]
        print(f"| run_task_replay_k1000 (a replayed track) | {fmt(statistics.median(p))} | {fmt(statistics.median(r))} | "
              f"{statistics.median(ratios):,.1f}x | {min(ratios):,.1f}-{max(ratios):,.1f}x | - | - |")

# run_task through the .so boundary against the same Python figure.
for k in ("k1000_steps_per_s", "k100_steps_per_s", "k3_runs_per_s"):
    p = [get(d["results"], ("run_task_steps", k)) for d in py]
    r = [get(d["boundary"], ("run_task_steps", k)) for d in rs]
    if None in p or None in r:
        continue
    ratios = [b / a for a, b in zip(p, r)]
    rm = statistics.median(ratios)
    target = 30 if k == "k1000_steps_per_s" else None
    met = "-" if target is None else ("yes" if rm >= target else "no")
    print(f"| run_task_steps.{k} (.so plugins) | {fmt(statistics.median(p))} | {fmt(statistics.median(r))} | "
          f"{rm:,.1f}x | {min(ratios):,.1f}-{max(ratios):,.1f}x | {'>= 30x' if target else '-'} | {met} |")

# run_task with provider, tool, detector and validator each in a plugin process.
for k in ("k1000_steps_per_s", "k100_steps_per_s", "k3_runs_per_s"):
    p = [get(d["results"], ("run_task_steps", k)) for d in py]
    r = [get(d.get("isolation", {}), ("run_task_steps", k)) for d in rs]
    if None in p or None in r:
        continue
    ratios = [b / a for a, b in zip(p, r)]
    rm = statistics.median(ratios)
    target = 5 if k == "k1000_steps_per_s" else None
    met = "-" if target is None else ("yes" if rm >= target else "no")
    print(f"| run_task_steps.{k} (every plugin isolated) | {fmt(statistics.median(p))} | {fmt(statistics.median(r))} | "
          f"{rm:,.1f}x | {min(ratios):,.1f}-{max(ratios):,.1f}x | {'>= 5x' if target else '-'} | {met} |")

prss = [d["results"]["peak_rss"]["peak_rss_mib"] for d in py]
rrss = [d["results"]["peak_rss"]["peak_rss_mib"] for d in rs]
ratio = statistics.median(rrss) / statistics.median(prss)
print(f"| peak_rss (100k events, MiB; lower is better) | {statistics.median(prss):.1f} | {statistics.median(rrss):.1f} | "
      f"{ratio:.2f}x | - | <= 0.25x | {'yes' if ratio <= 0.25 else 'no'} |")

print("\nFigures with no Python twin (Rust medians over the rounds):\n")
print("| figure | median | target | met |")
print("|---|---:|---:|:---:|")
b = [d["boundary"] for d in rs]
k1000 = statistics.median(get(d["results"], ("run_task_steps", "k1000_steps_per_s")) for d in rs)
k100 = statistics.median(get(d["results"], ("run_task_steps", "k100_steps_per_s")) for d in rs)
print(f"| K=1000 steps/s / K=100 steps/s (in-process) | {k1000 / k100:.2f} | >= 0.8 | {'yes' if k1000 / k100 >= 0.8 else 'no'} |")
ns = statistics.median(x["ffi_tool_call"]["median_ns_per_call"] for x in b)
print(f"| one tool call across the boundary (ns) | {ns:,.0f} | <= 2000 | {'yes' if ns <= 2000 else 'no'} |")
ms = statistics.median(x["scan_load_100"]["median_ms_per_scan"] for x in b)
print(f"| scan + load 100 libraries (ms) | {ms:,.1f} | <= 100 | {'yes' if ms <= 100 else 'no'} |")
cr = statistics.median(x["detector_checkpoint"]["cost_ratio_100000_vs_10"] for x in b)
print(f"| checkpoint cost at 100k events / at 10 events | {cr:.2f} | <= 2 | {'yes' if cr <= 2 else 'no'} |")
iso = [d["isolation"] for d in rs if "isolation" in d]
if iso:
    med = statistics.median(x["tool_call"]["median_ns"] for x in iso) / 1000
    p99 = statistics.median(x["tool_call"]["p99_ns"] for x in iso) / 1000
    print(f"| one isolated tool call, median (us) | {med:,.1f} | <= 25 | {'yes' if med <= 25 else 'no'} |")
    print(f"| one isolated tool call, p99 (us) | {p99:,.1f} | - | - |")
    warm = statistics.median(x["discovery_100"]["warm_ms_median"] for x in iso)
    cold = statistics.median(x["discovery_100"]["cold_ms"] for x in iso)
    children = max(x["discovery_100"]["warm_probe_children"] for x in iso)
    print(f"| discovery of 100 libraries, verdicts cached (ms; probe children: {children}) | {warm:,.1f} | <= 30 | {'yes' if warm <= 30 and children == 0 else 'no'} |")
    print(f"| discovery of 100 libraries, cold probe (ms) | {cold:,.0f} | <= 2000 | {'yes' if cold <= 2000 else 'no'} |")

logs = [d["logs"] for d in rs if "logs" in d]
if logs:
    print("\nDurable logs (Rust medians over the rounds). Appends per second from 1 and 8")
    print("writer processes, one event per append and batches of 100; a K=1000 run logging")
    print("into each log (two commits a step, before the provider and the tool call),")
    print("beside the same run (.so plugins) on the in-memory log:\n")
    print("| log | survives | 1 writer, 1/append | 1 writer, 100/batch | 8 writers, 1/append | 8 writers, 100/batch | K=1000 run (steps/s) | run vs in-memory |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    memory = statistics.median(get(d["boundary"], ("run_task_steps", "k1000_steps_per_s")) for d in rs)
    print(f"| memory | the host process | - | - | - | - | {memory:,.0f} | 1x |")
    for label in logs[0]["appends"]:
        cells = [statistics.median(x["appends"][label][k]["median"] for x in logs) for k in ("w1_b1", "w1_b100", "w8_b1", "w8_b100")]
        run = statistics.median(x["run_task_k1000_into"][label]["median"] for x in logs)
        survives = logs[0]["appends"][label]["survives"].split(":")[0]
        print(f"| {label} | {survives} | " + " | ".join(f"{c:,.0f}" for c in cells) + f" | {run:,.0f} | {memory / run:,.0f}x slower |")
    floors = logs[0]["floors"]
    print("\nFloors on this machine (median, us): " + "; ".join(
        f"{v['what']}: {statistics.median(x['floors'][k]['median'] for x in logs):,.0f}" for k, v in floors.items()))
