"""The Python reference's replay of the track zu-bench replays: zu-core 0.2.0's
run_task driving a K=1000 track (K-1 noop tool calls, no model call) and one
model turn for the final answer, in steps/s, measured like the anchor bench
(../shared/bench/python-anchor/bench.py: 1 warm-up, 5 timed repetitions).

    /tmp/zu-anchor-venv/bin/python bench/replay_anchor.py --out py-replay.json

compare.sh runs it beside the anchor and zu-bench; compare.py prints the row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time

WARMUP, REPS, K = 1, 5, 1000


class NoopTool:
    name = "noop"
    schema = {"name": "noop", "description": "does nothing",
              "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    prompt_fragment = "noop(x): does nothing, returns {ok: true}"
    tier = 1
    capabilities: frozenset = frozenset()
    egress: frozenset = frozenset()
    calls = 0

    async def __call__(self, ctx, **kw):
        NoopTool.calls += 1
        return {"ok": True}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import zu_core as zu
    from zu_core.loop import run_task
    from zu_core.ports import Capabilities, ModelResponse
    from zu_core.track import Track, TrackStep

    class Final:
        capabilities = Capabilities()
        model = None
        calls = 0

        async def complete(self, req):
            Final.calls += 1
            return ModelResponse(text='{"answer": 1}')

    track = Track(task="bench", steps=[TrackStep(tool="noop", args={"x": i}) for i in range(1, K)])
    rates = []
    for rep in range(WARMUP + REPS):
        reg = zu.Registry()
        reg.register("tools", "noop", NoopTool())
        spec = zu.TaskSpec(query="bench", budget=zu.Budget(max_steps=K + 5, wall_time_s=10_000))
        bus = zu.EventBus()
        Final.calls, NoopTool.calls = 0, 0
        gc.collect()
        t0 = time.perf_counter()
        result = await run_task(spec, Final(), registry=reg, bus=bus, track=track)
        dt = time.perf_counter() - t0
        events = await bus.query({})
        replayed = sum(1 for e in events if e.type == "harness.turn.started" and e.payload.get("replay"))
        if result.status != zu.Status.SUCCESS or replayed != K - 1 or Final.calls != 1 or NoopTool.calls != K - 1:
            raise SystemExit(f"replay K={K}: {result.status} {replayed} replayed {Final.calls} model calls")
        if rep >= WARMUP:
            rates.append(K / dt)
    out = {"median": statistics.median(rates), "unit": "steps/s", "samples": rates,
           "min": min(rates), "max": max(rates)}
    print(f"  run_task K={K} replayed  median {out['median']:,.1f} steps/s", file=sys.stderr)
    with open(args.out, "w") as fh:
        json.dump({"bench": "zu-core 0.2.0 replay", "results": {"run_task_replay_k1000": out}}, fh, indent=2)


if __name__ == "__main__":
    asyncio.run(main())
