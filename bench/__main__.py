"""`python -m bench [--quick]`: run the measurements, print tables, write results."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import FUNCTIONS_DIR, REPO, machine, machine_line

SECTIONS = ("purge", "sweep", "coldstart", "media")


def _say(text: str) -> None:
    print(text, flush=True)


def _plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "purge_sizes": [2_000, 10_000],
            "purge_runs": 1,
            "sweep_sizes": [2_000],
            "sweep_runs": 1,
            "coldstart_runs": 1,
            "coldstart_warmup": False,
            "media": "quick",
        }
    return {
        "purge_sizes": [10_000, 100_000, 1_000_000],
        "purge_runs": 5,
        "sweep_sizes": [10_000, 100_000],
        "sweep_runs": 5,
        "coldstart_runs": 7,
        "coldstart_warmup": True,
        "media": "full",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a small version, under a minute"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: {','.join(SECTIONS)})",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="results folder"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / ".local" / "bench",
        help="scratch folder for the database and files (wiped per section)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the benchmark's Postgres data"
    )
    args = parser.parse_args(argv)
    # The media measurements call the library in-process, as the job would.
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.insert(0, str(FUNCTIONS_DIR))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")

    plan = _plan(args.quick)
    work: Path = args.work.resolve()
    out: Path = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "quick-" if args.quick else ""
    started = time.monotonic()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "plan": plan,
        "machine": machine(work),
    }
    _say(f"machine: {machine_line(results['machine'])}")

    from bench import report

    sections: dict[str, Any] = {}
    for section in SECTIONS:
        if section not in only:
            continue
        _say(f"\n== {section} ==")
        section_started = time.monotonic()
        sections[section] = _run_section(section, plan, work, args.keep)
        sections[section]["elapsed_s"] = round(time.monotonic() - section_started, 1)
        for title, table in report.section_tables(section, sections[section]):
            _say(f"\n### {title}\n\n{table}")
    results.update(sections)
    results["targets"] = report.targets(results)
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    _say("\n### Targets\n\n" + report.targets_table(results["targets"]))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"{prefix}bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    (out / f"{prefix}latest.json").write_text(
        json.dumps(results, indent=2, default=str)
    )
    if "purge" in results:
        chart = out / f"{prefix}purge-throughput.png"
        report.purge_chart(results["purge"], chart)
        _say(f"\nchart: {chart}")
    (out / f"{prefix}latest.md").write_text(report.markdown(results))
    _say(f"results: {path}\ntook {results['elapsed_s']} s")
    # A missed target is a finding, printed above, not a failure of the run.
    return 0


def _run_section(
    section: str, plan: dict[str, Any], work: Path, keep: bool
) -> dict[str, Any]:
    if section == "purge":
        from bench import purge

        return purge.run(
            work / "purge", plan["purge_sizes"], plan["purge_runs"], _say, keep=keep
        )
    if section == "sweep":
        from bench import sweep

        return sweep.run(work / "sweep", plan["sweep_sizes"], plan["sweep_runs"], _say)
    if section == "coldstart":
        from bench import coldstart

        return coldstart.run(
            work / "coldstart",
            plan["coldstart_runs"],
            _say,
            warmup=plan["coldstart_warmup"],
        )
    from bench import media

    return media.run(work / "media", plan["media"], _say)


if __name__ == "__main__":
    sys.exit(main())
