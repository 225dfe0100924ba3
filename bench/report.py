"""Tables, targets, the chart and the Markdown summary of one benchmark run."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bench.common import machine_line, markdown_table

# A peak RSS within this share of the smallest table's counts as flat.
FLAT_MEMORY_SHARE = 0.10


def section_tables(section: str, data: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, Markdown table) pairs of one section."""
    module = importlib.import_module(f"bench.{section}")
    result: list[tuple[str, str]] = module.tables(data)
    return result


def _target(
    name: str, wanted: str, measured: str, met: bool | None, note: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "target": wanted,
        "measured": measured,
        "met": met,
        "note": note,
    }


def _purge_targets(purge: dict[str, Any]) -> list[dict[str, Any]]:
    cases = purge["cases"]
    largest = max(purge["sizes"])
    smallest = min(purge["sizes"])
    found = []
    for case in cases:
        if case["rows"] != largest:
            continue
        product = case["approaches"]["product"]
        peer = case["approaches"]["peer"]
        if case["scenario"] == "backlog":
            ratio = product["throughput_ratio_to_raw"]
            found.append(
                _target(
                    f"purge backlog, {largest:,} rows: throughput vs raw DELETE",
                    ">= 0.80x",
                    f"{ratio:.2f}x (peer {peer['throughput_ratio_to_raw']:.2f}x)",
                    ratio >= 0.8,
                )
            )
        else:
            ratio = product["time_ratio_to_raw"]
            found.append(
                _target(
                    f"purge steady state, {largest:,} rows: time vs raw DELETE",
                    "<= 1.20x",
                    f"{ratio:.2f}x (peer {peer['time_ratio_to_raw']:.2f}x)",
                    ratio <= 1.2,
                )
            )
    products = [c["approaches"]["product"] for c in cases]
    longest = max(p["longest_transaction_ms_max"] for p in products)
    slow = sum(p.get("transactions_over_100ms", 0) for p in products)
    total = sum(p.get("transactions_total", 0) for p in products)
    found.append(
        _target(
            "purge: every transaction (all sizes, scenarios and runs)",
            "< 100 ms",
            f"longest {longest:,.1f} ms; {slow} of {total:,} over 100 ms",
            longest < 100,
        )
    )
    rss = {
        c["rows"]: c["approaches"]["product"]["max_rss_mb"]["max"]
        for c in cases
        if c["scenario"] == "backlog"
    }
    growth = rss[largest] / rss[smallest] - 1
    found.append(
        _target(
            f"purge: peak memory flat {smallest:,} -> {largest:,} rows",
            f"within {FLAT_MEMORY_SHARE:.0%}",
            f"{rss[smallest]:.0f} -> {rss[largest]:.0f} MB ({growth:+.1%})",
            growth <= FLAT_MEMORY_SHARE,
        )
    )
    exact = all(entry["correct"] for c in cases for entry in c["approaches"].values())
    found.append(
        _target(
            "purge: deletes exactly the rows older than the cutoff",
            "every run",
            "yes" if exact else "NO",
            exact,
        )
    )
    return found


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every DESIGN.md performance target this run measured, met or not."""
    found: list[dict[str, Any]] = []
    if "purge" in results:
        found += _purge_targets(results["purge"])
    for section in ("sweep", "coldstart", "media"):
        if section in results:
            module = importlib.import_module(f"bench.{section}")
            found += module.targets(results[section])
    return found


def targets_table(found: list[dict[str, Any]]) -> str:
    """The targets, side by side with what was measured."""
    labels = {True: "met", False: "MISSED", None: "not measured"}
    return markdown_table(
        ["target", "wanted", "measured", "result"],
        [[t["name"], t["target"], t["measured"], labels[t["met"]]] for t in found],
    )


def purge_chart(purge: dict[str, Any], path: Path) -> None:
    """Purge throughput against table size, one line per approach and scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.purge import APPROACHES, LABELS, SCENARIOS

    styles = {
        "raw": ("#444444", "--"),
        "product": ("#1f77b4", "-"),
        "peer": ("#d62728", ":"),
    }
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for axis, (scenario, retention_days, share) in zip(axes, SCENARIOS, strict=True):
        cases = sorted(
            (c for c in purge["cases"] if c["scenario"] == scenario),
            key=lambda c: c["rows"],
        )
        sizes = [c["rows"] for c in cases]
        for approach in APPROACHES:
            color, line = styles[approach]
            axis.plot(
                sizes,
                [c["approaches"][approach]["rows_per_s"]["median"] for c in cases],
                marker="o",
                color=color,
                linestyle=line,
                label=LABELS[approach],
            )
        axis.set_xscale("log")
        axis.set_xticks(sizes)
        axis.set_xticklabels([f"{s:,}" for s in sizes])
        axis.minorticks_off()
        axis.set_ylim(bottom=0)
        axis.set_xlabel("table size (rows)")
        axis.set_ylabel("rows deleted per second")
        axis.set_title(f"{scenario}: {share:.0%} expired ({retention_days} days)")
        axis.grid(True, alpha=0.3)
        axis.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}")
        )
    axes[0].legend(loc="best", fontsize=8)
    figure.suptitle("Log purge throughput on the embedded Postgres (median of runs)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(results: dict[str, Any]) -> str:
    """Every table of the run, as Markdown, for the README."""
    parts = [f"Measured {results['started_at']} on {machine_line(results['machine'])}."]
    for section in ("purge", "sweep", "coldstart", "media"):
        if section in results:
            for title, table in section_tables(section, results[section]):
                parts.append(f"**{title}**\n\n{table}")
    parts.append("**Targets**\n\n" + targets_table(results["targets"]))
    return "\n\n".join(parts) + "\n"
