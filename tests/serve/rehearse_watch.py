"""Seed 000's seven-day watch rehearsed on travelled time (issue #15, "Done means": a
travelled-time transcript of seed 000's 7-day watch). Not a test (pytest does not collect
it): ``python -m tests.serve.rehearse_watch [FILE]`` runs it (about a minute) and prints the
transcript (``tminus watch DEPLOY``: checks × time, WARN/CRITICAL marked), writing it to FILE
too.

The plan is examples/seeds/archive-import.yaml, in a rewritten copy:

- its ``watch:`` schedule is used **as written** (day 1 every 30 minutes, hourly and every
  2 hours; days 2-7 daily; the day 2-7 focus periods; weeks 2-4 weekly), ``on_critical:
  notify`` as written;
- the checks the watch names are **stand-ins**: each becomes a ``command`` check reading
  ``values/NAME`` (a file the rehearsal writes), with the seed check's own ``expect``,
  ``warn`` and ``critical``; the real sources (MySQL queries, HTTP timings, ``bin/magento``
  commands, file counts) are not run;
- the phases are one local ``run`` step (the deploy's data phases are rehearsed in
  tests/examples/test_seed_rehearsals.py); left out: ``checklist``, ``approvals`` (none
  needed to start), ``notifications``, ``success_metrics``, ``rollback_triggers``,
  ``operations``, ``health``, the phases' ``verify`` and ``rollback``; of ``notifications``
  only the ``watch_warn`` and ``watch_critical`` rules are kept, as written, their channels
  (Slack, the team's email) turned into ``log`` channels (no receiver runs here).

What happens: scheduled at T-1h, a real ``tminus serve`` on the travelled clock, T-0 (the
deploy runs and succeeds), then the clock is moved to each due time of the watch in turn (the
next one ``tminus watch --output json`` lists) until day 8 (weeks 2-4 are shown as still
planned). On day 4 ("memory leak detection") memory use is raised to 85% (WARN: > 80%) and
on day 6 disk use to 95% (CRITICAL: the plan says notify).
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.serve.conftest import Serve
from tminus.plan.loader import parse_yaml

SEED = Path(__file__).resolve().parents[2] / "examples" / "seeds" / "archive-import.yaml"
T0 = datetime(2027, 3, 1, 2, 0, tzinfo=UTC)
#: The stand-in value each check reads (passing), and the days some change.
VALUES = {
    "exception_log": "0",
    "error_rate": "0.2%",
    "import_success_rate": "99%",
    "dashboard_load_time": "40ms",
    "unmatched_tracks": "12",
    "active_imports": "0",
    "memory_usage": "55%",
    "match_rate": "98.5%",
    "tables_present": "9",
    "modules_registered": "6",
    "disk_usage": "61%",
    "cron_running": "1",
    "indexes_present": "9",
    "foreign_keys_present": "4",
    "cli_commands_available": "7",
}
CHANGES = {3: ("memory_usage", "85%"), 5: ("disk_usage", "95%")}  # day index → value


def rehearsal_plan() -> str:
    data, _, problems = parse_yaml(SEED.read_text(), SEED.name)
    assert not [p for p in problems if p.severity == "error"], problems
    watch = data["watch"]
    names = sorted({c for period in watch["schedule"] for c in period["checks"]})
    checks = {}
    for name in names:
        seed = data["checks"][name]
        check: dict[str, Any] = {
            "name": f"{seed.get('name', name)} (stand-in)",
            "source": "command",
            "command": f"cat values/{name}",
        }
        for k in ("expect", "warn", "critical"):
            if k in seed:
                check[k] = seed[k]
        checks[name] = check
    plan = {
        "tminus": 1,
        "name": data["name"],
        "environment": data["environment"],
        "window": {"start": T0.isoformat(), "timezone": "UTC", "duration": "35m"},
        "checks": checks,
        "phases": [
            {
                "name": "Deploy (rehearsal stand-in)",
                "steps": [{"kind": "run", "command": "echo deployed > deployed.txt"}],
            }
        ],
        "watch": watch,
        # the seed's watch_warn and watch_critical rules as written, their channels (Slack, the
        # team's email) printed to the log instead: no receiver runs here
        "notifications": {
            "channels": {
                name: {"kind": "log"}
                for r in data["notifications"]["rules"]
                if r["when"] in ("watch_warn", "watch_critical")
                for name in r["channels"]
            },
            "rules": [
                r
                for r in data["notifications"]["rules"]
                if r["when"] in ("watch_warn", "watch_critical")
            ],
        },
    }
    return yaml.safe_dump(plan, sort_keys=False)


def _summary(rows: list[dict[str, Any]]) -> str:
    """Per period of the schedule: its rounds (first and last time), its measurements by
    status; then every WARN and CRITICAL mark with its time."""
    periods: dict[int, dict[str, Any]] = {}
    for m in rows:
        p = periods.setdefault(
            int(m["period_index"]), {"label": m["period"], "at": [], "status": {}}
        )
        p["at"].append(str(m["at"])[:16])
        p["status"][m["status"]] = p["status"].get(m["status"], 0) + 1
    lines = ["| period (as the seed's plan writes it) | rounds | first | last | measurements |"]
    lines.append("| --- | ---: | --- | --- | --- |")
    for _, p in sorted(periods.items()):
        rounds = len(set(p["at"]))
        counts = ", ".join(f"{n} {k}" for k, n in sorted(p["status"].items()))
        lines.append(f"| {p['label']} | {rounds} | {min(p['at'])} | {max(p['at'])} | {counts} |")
    lines.append("")
    lines.append("WARN and CRITICAL marks:")
    for m in rows:
        if m["status"] in ("warn", "critical"):
            lines.append(
                f"- {str(m['at'])[:16]} {m['status'].upper()} {m['check']}: {m['message']}"
            )
    return "\n".join(lines)


def _watch(s: Serve, deploy: str) -> dict[str, Any]:
    return dict(json.loads(s.tm("watch", deploy, "--output", "json").stdout))


def run(cwd: Path) -> str:
    s = Serve(cwd)
    try:
        (cwd / "plan.yaml").write_text(rehearsal_plan())
        values = cwd / "values"
        values.mkdir()
        for k, v in VALUES.items():
            (values / k).write_text(v + "\n")
        s.travel_to(T0 - timedelta(hours=1))
        s.tm("schedule", "plan.yaml", check=0)
        deploy = "archive-import-1"
        s.start()
        s.travel_to(T0)
        s.wait_for("the deploy to succeed", lambda: s.status(deploy)["state"] == "succeeded")
        changed: set[int] = set()
        steps = 0
        while True:
            w = _watch(s, deploy)
            upcoming = [datetime.fromisoformat(str(n["due_at"])) for n in w["next"]]
            if not upcoming:
                break
            due = min(upcoming)
            if due >= T0 + timedelta(days=7, hours=1):
                break  # weeks 2-4: shown as planned
            day = int((due - T0).total_seconds() // 86400)
            if day in CHANGES and day not in changed:
                name, value = CHANGES[day]
                (values / name).write_text(value + "\n")
                changed.add(day)
            before = len(w["measurements"])
            s.travel_to(due + timedelta(seconds=1))
            s.wait_for(
                f"the watch round due at {due}",
                lambda b=before: len(_watch(s, deploy)["measurements"]) > b,  # type: ignore[misc]
                timeout=30,
                every=0.05,
            )
            steps += 1
        w = _watch(s, deploy)
        table = _summary(w["measurements"])
        counts: dict[str, int] = {}
        for m in w["measurements"]:
            counts[str(m.get("status"))] = counts.get(str(m.get("status")), 0) + 1
        notices = [str(e["message"]) for e in s.events(deploy) if e["type"] == "notify"]
        head = (
            f"# Seed 000 (archive-import): the 7-day watch on travelled time\n\n"
            f"T-0 {T0:%Y-%m-%d %H:%M} UTC; {steps} watch rounds fired by `tminus serve` at their "
            f"travelled times; {len(w['measurements'])} measurements: "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            + f"; still planned (weeks 2-4): {len(w['next'])}\n\n"
        )
        return (
            head
            + table
            + f"\n\nmessages recorded by the watch's WARN and CRITICAL: {len(notices)}\n"
            + "".join(f"- {n}\n" for n in notices[:4])
        )
    finally:
        s.stop_all()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tminus-watch-") as tmp:
        text = run(Path(tmp))
    print(text)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)


if __name__ == "__main__":
    main()
