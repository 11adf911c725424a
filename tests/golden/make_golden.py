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
from uuid import UUID
from pathlib import Path

import zu_core
from zu_core import (
    Budget, Capabilities, EventBus, Finish, ModelResponse, Registry, Scope,
    SecurityBlock, Severity, TaskSpec, ToolCall, Verdict,
)
from zu_core.loop import run_task
from zu_core.pipeline import Phase, run_pipeline
from zu_core.track import Track

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
                out = dict(behavior["return"])
                for k, n in behavior.get("repeat", {}).items():
                    out[k] = out[k] * n
                return out
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


def registry_for(scenario):
    reg = Registry()
    for t in scenario.get("tools", []):
        reg.register("tools", t["name"], make_tool(t))
    for d in scenario.get("detectors", []):
        reg.register("detectors", d["name"], make_detector(d))
    for v in scenario.get("validators", []):
        reg.register("validators", v["name"], make_validator(v))
    return reg


def spec_for(task):
    task = dict(task)
    budget = Budget(**task.pop("budget", {}))
    return TaskSpec(budget=budget, **task)


def result_json(result):
    return {"status": result.status.value, "value": result.value, "reason": result.reason}


async def run(scenario):
    reg = registry_for(scenario)
    spec = spec_for(scenario["task"])
    bus = EventBus()
    options = dict(scenario.get("options", {}))
    kwargs = {}
    if "track" in scenario:
        kwargs["track"] = Track.from_json(json.dumps(scenario["track"]))
    if "replay_budget" in options:
        kwargs["replay_budget"] = Budget(**options.pop("replay_budget"))
    if "finish_responses" in options:
        kwargs["finish_provider"] = ScriptedProvider(options.pop("finish_responses"))
    kwargs.update(options)
    result = await run_task(spec, ScriptedProvider(scenario["responses"]), registry=reg, bus=bus, **kwargs)
    events = await bus.query({})
    return {
        "scenario": scenario["name"],
        "reference": "zu-core 0.2.0",
        "result": result_json(result),
        "event_types": [e.type for e in events],
    }


async def run_pipeline_scenario(p):
    """Each of the scenario's runs is the pipeline run again on the same log
    with the same id: a later run skips the phases an earlier one finished."""
    bus = EventBus()
    reg = registry_for(p)
    pid = UUID(p["id"])
    phases = [Phase(ph["name"], (lambda t: lambda prev: spec_for(t))(ph["task"])) for ph in p["phases"]]
    results = []
    for r in p["runs"]:
        out = await run_pipeline(phases, ScriptedProvider(r["responses"]), reg, bus, pipeline_id=pid)
        results.append({"status": out.status.value, "value": out.value, "failed_phase": out.failed_phase})
    events = await bus.query({})
    return {
        "scenario": p["name"],
        "reference": "zu-core 0.2.0",
        "results": results,
        "event_types": [e.type for e in events],
        "task_ids": sorted({str(e.task_id) for e in events}),
    }


def main() -> None:
    doc = json.loads((HERE / "scenarios.json").read_text())
    only = set(sys.argv[1:])
    jobs = [(s, run) for s in doc["scenarios"]] + [(p, run_pipeline_scenario) for p in doc.get("pipelines", [])]
    for s, runner in jobs:
        if only and s["name"] not in only:
            continue
        out = asyncio.run(runner(s))
        (HERE / f"{s['name']}.json").write_text(json.dumps(out, indent=2) + "\n")
        print(f"{s['name']}: {len(out['event_types'])} events", file=sys.stderr)


if __name__ == "__main__":
    main()
