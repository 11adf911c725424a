"""Record what the Python reference, zu-core 0.2.0, does on each scenario of
scenarios.json: the Result and the exact sequence of event types. The Rust
loop's scenario tests (tests/tests/e2e/scenarios.rs) compare against these.

    python3 -m venv /tmp/zu-venv && /tmp/zu-venv/bin/pip install zu-core==0.2.0
    /tmp/zu-venv/bin/python tests/golden/make_golden.py

Writes tests/golden/<scenario>.json. Wall-time scenarios take about a second each.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import zu_core
from zu_core import (
    Budget, Capabilities, EventBus, Finish, ModelResponse, Registry, Scope,
    SecurityBlock, Severity, TaskSpec, ToolCall, Verdict,
)
from zu_core.loop import run_task

HERE = Path(__file__).parent


class ScriptedProvider:
    capabilities = Capabilities()
    model = None

    def __init__(self, responses):
        self.responses = list(responses)
        self.calls = 0

    async def complete(self, req):
        r = self.responses[self.calls]
        self.calls += 1
        if r.get("hang"):
            await asyncio.sleep(3600)
        calls = [ToolCall(name=c["name"], args=c.get("args", {})) for c in r.get("tool_calls", [])]
        finish = r.get("finish") or ("tool_calls" if calls else "stop")
        return ModelResponse(text=r.get("text"), tool_calls=calls, finish=Finish(finish), usage=r.get("usage", {}))


def make_tool(spec):
    behavior = spec["behavior"]

    class T:
        name = spec["name"]
        tier = spec.get("tier", 1)
        schema = {"name": spec["name"], "parameters": {"type": "object"}}
        prompt_fragment = f"{spec['name']}: a scenario tool"
        capabilities = frozenset(spec.get("capabilities", []))
        egress = frozenset(spec.get("egress", []))

        async def __call__(self, ctx, **kwargs):
            if "return" in behavior:
                return dict(behavior["return"])
            if "hang" in behavior:
                await asyncio.sleep(3600)
            if "panic" in behavior:
                raise RuntimeError(behavior["panic"])
            if "huge" in behavior:
                return {"blob": "x" * behavior["huge"]}
            if "block" in behavior:
                b = behavior["block"]
                raise SecurityBlock(b["message"], kind=b["kind"], target=b.get("target"))
            raise AssertionError(behavior)

    return T()


def make_detector(spec):
    class D:
        name = spec["name"]
        scope = Scope(spec["scope"])

        def inspect(self, ctx):
            obs = ctx.observation
            when = spec.get("when")
            if when is not None:
                if not isinstance(obs, dict) or when["key"] not in obs or obs[when["key"]] != when["equals"]:
                    return None
            return Verdict(severity=Severity(spec["severity"]), detector=self.name, detail=spec.get("detail"))

    return D()


def make_validator(spec):
    class V:
        name = spec["name"]
        failed = 0

        def check(self, result, ctx):
            if self.failed < spec["fail_times"]:
                self.failed += 1
                return Verdict(severity=Severity(spec["severity"]), detector=self.name, detail=spec.get("detail"))
            return None

    return V()


async def run(scenario):
    reg = Registry()
    for t in scenario.get("tools", []):
        reg.register("tools", t["name"], make_tool(t))
    for d in scenario.get("detectors", []):
        reg.register("detectors", d["name"], make_detector(d))
    for v in scenario.get("validators", []):
        reg.register("validators", v["name"], make_validator(v))
    task = dict(scenario["task"])
    budget = Budget(**task.pop("budget", {}))
    spec = TaskSpec(budget=budget, **task)
    bus = EventBus()
    result = await run_task(spec, ScriptedProvider(scenario["responses"]), registry=reg, bus=bus)
    events = await bus.query({})
    return {
        "scenario": scenario["name"],
        "reference": "zu-core 0.2.0",
        "result": {"status": result.status.value, "value": result.value, "reason": result.reason},
        "event_types": [e.type for e in events],
    }


def main() -> None:
    scenarios = json.loads((HERE / "scenarios.json").read_text())["scenarios"]
    only = set(sys.argv[1:])
    for s in scenarios:
        if only and s["name"] not in only:
            continue
        out = asyncio.run(run(s))
        (HERE / f"{s['name']}.json").write_text(json.dumps(out, indent=2) + "\n")
        print(f"{s['name']}: {out['result']['status']} ({len(out['event_types'])} events)", file=sys.stderr)


if __name__ == "__main__":
    main()
