"""rollback: `ledger.rollback` of N 384-d vectors (steady and cold) against one plain Annoy
build of the same vectors and a raw read of the log; phases, peak RSS, growth, full replay.

The log (through ``ledger.Producer`` to the broker): N v1 embeddings, 10% re-embedded by v2,
v2 deployed, v1 redeployed naively (a deployment event only). Then, each case in a child
process of its own (its peak RSS and its build workers' are measured):

- steady: the home is materialised first (``catch_up``), then the rollback is timed;
- cold: a fresh home, so the rollback materialises the whole log itself;
- full replay: ``RollbackOptions(full_replay=True)``: the whole log replayed into a fresh store;
- floor: the same vectors from a numpy array into one Annoy index (add items, build with
  n_jobs=-1, save) at the rollback's number of trees;
- raw consume: a read of the whole log by the client in use (its plain consumer) with the
  materialiser's settings.

    scripts/bench.py rollback --n 20000                       # a smoke test, ~1 min
    scripts/bench.py rollback --growth 100000,300000 --n 1000000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

from benchmarks._common import (
    DIM,
    MODEL,
    embeddings,
    figure,
    load,
    produce_log,
    raw_read,
    rss_kb,
    run_case,
    write_result,
)

NEEDS_BROKER = True
CASES = ("steady", "cold", "full-replay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1_000_000, help="v1 embeddings (default 1M)")
    parser.add_argument(
        "--growth",
        default=None,
        help="comma-separated sizes for the per-item growth series (steady case and floor "
        "at each; --n is added), e.g. 100000,300000,1000000",
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"which rollbacks at --n (of {','.join(CASES)})"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run the steady case at --n under cProfile and print its top 15 (cumulative)",
    )
    # The child processes' own arguments (bench.py rollback --case ...): not for people.
    parser.add_argument("--case", choices=("rollback", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--topics", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--full-replay", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)


# -- child processes ---------------------------------------------------------------------


def _child_rollback(args: argparse.Namespace) -> None:
    from ledger import RollbackOptions, Topics, rollback

    # Progress segments: a new one starts whenever the phase changes (the announce stage
    # catches up again, so "catch-up" can appear twice).
    segments: list[list[Any]] = []
    started = time.perf_counter()
    epoch = time.time()  # to line the phases up with the parent's memory samples

    def progress(phase: str, done: int, total: int) -> None:
        now = time.perf_counter() - started
        if not segments or segments[-1][0] != phase:
            segments.append([phase, now, now, done, total])
        else:
            segments[-1][2:] = [now, done, total]

    profiler = cProfile.Profile() if args.profile_out else None
    if profiler is not None:
        profiler.enable()
    result = rollback(
        args.bootstrap,
        Topics(args.topics),
        Path(args.home),
        [MODEL],
        to="v1",
        dry_run=False,
        options=RollbackOptions(full_replay=args.full_replay),
        progress=progress,
    )
    total = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(15)
        stats.sort_stats("tottime").print_stats(10)
        Path(args.profile_out).write_text(out.getvalue())
    write_result(
        args.result,
        {
            "total_s": total,
            "epoch": epoch,
            "segments": segments,
            "switched": result.switched,
            "items": result.plan.models[0].index_items,
            "checks": [[c.name, c.passed, dict(c.figures)] for c in result.checks],
        },
    )


def _child_floor(args: argparse.Namespace) -> None:
    from annoy import AnnoyIndex

    from ledger.artifacts.index_build import DEFAULT_TREES

    vectors = embeddings("v1", 0, args.n)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        started = time.perf_counter()
        index = AnnoyIndex(DIM, "angular")
        index.set_seed(1)
        for i, row in enumerate(vectors):  # the build workers' fast path (array('f') rows)
            index.add_item(i, array("f", row.tobytes()))
        added = time.perf_counter()
        index.build(DEFAULT_TREES, n_jobs=-1)
        built = time.perf_counter()
        index.save(str(Path(tmp) / "floor.ann"))
        saved = time.perf_counter()
        size = (Path(tmp) / "floor.ann").stat().st_size
        index.unload()
    write_result(
        args.result,
        {
            "total_s": saved - started,
            "add_s": added - started,
            "build_s": built - added,
            "save_s": saved - built,
            "trees": DEFAULT_TREES,
            "bytes": size,
        },
    )


# -- the parent ----------------------------------------------------------------------------


def _raw_consume(bootstrap: str, prefix: str) -> tuple[float, int]:
    """Seconds to read the whole log with the materialiser's consumer settings; messages."""
    from consumers.lag import true_ends
    from ledger import Topics

    topics = Topics(prefix)
    total = sum(true_ends(bootstrap, topics.all).values())
    return raw_read(bootstrap, topics, total), total


def setup_log(bootstrap: str, n: int, tmp: Path) -> tuple[str, Path, int]:
    """A fresh log of size ``n`` and a materialised home for it: (prefix, home, events)."""
    from consumers.catchup import catch_up
    from ledger import Topics

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    events = produce_log(bootstrap, prefix, n)
    seconds = time.perf_counter() - started
    figure(f"setup_n{n}_produce", f"{events} events in {seconds:.1f} s ({events / seconds:,.0f}/s)")
    home = tmp / f"steady-{n}"
    started = time.perf_counter()
    stats = catch_up(bootstrap, Topics(prefix), home)
    seconds = time.perf_counter() - started
    figure(
        f"setup_n{n}_materialise",
        f"{stats.events} events in {seconds:.1f} s ({stats.events / seconds:,.0f}/s)",
    )
    return prefix, home, events


def rollback_case(
    args: argparse.Namespace, prefix: str, home: Path, *, full_replay: bool = False, **extra: str
) -> dict[str, Any]:
    argv = ["--bootstrap", args.bootstrap, "--topics", prefix, "--home", str(home)]
    if full_replay:
        argv.append("--full-replay")
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", value]
    result = run_case("rollback", "rollback", argv)
    if not result["switched"]:
        raise SystemExit("the rollback did not switch")
    return result


def _floor_case(args: argparse.Namespace, n: int) -> dict[str, Any]:
    return run_case("rollback", "floor", ["--bootstrap", args.bootstrap, "--n", str(n)])


def _phases(name: str, result: dict[str, Any]) -> float:
    """Print each progress segment and what lies outside them; their sum."""
    inside = 0.0
    timeline = []
    seen: dict[str, int] = {}
    for phase, first, last, done, total in result["segments"]:
        seen[phase] = seen.get(phase, 0) + 1
        label = phase if seen[phase] == 1 else f"{phase}-{seen[phase]}"
        figure(f"{name}_phase_{label}_s", f"{last - first:.2f} ({done}/{total})")
        inside_phase = [
            (kb, anon)
            for t, kb, anon in result.get("memory_series", [])
            if first <= t - result.get("epoch", 0.0) <= last
        ]
        if inside_phase:
            kb, anon = max(inside_phase)
            print(
                f"{name}_phase_{label}_peak_rss: {kb / 2**20:.2f} GiB (anon {anon / 2**20:.2f})",
                flush=True,
            )
        inside += last - first
        timeline.append(f"{label} {first:.1f}-{last:.1f}")
    outside = result["total_s"] - inside
    figure(f"{name}_outside_phases_s", f"{outside:.2f}", "n/a: plan, reports, announce, setup")
    print(f"{name} timeline (s from start): {', '.join(timeline)}", flush=True)
    return outside


def _memory(name: str, result: dict[str, Any], raw_bytes: int) -> float:
    peak = result["tree_peak_kb"] * 1024
    figure(
        f"{name}_peak_rss",
        f"{peak / 2**30:.2f} GiB sampled over {result['tree_peak_processes']} processes "
        f"(anon {result['tree_peak_anon_kb'] / 2**20:.2f} GiB); rollback process "
        f"{result['main_peak_kb'] / 2**20:.2f} GiB (ru_maxrss "
        f"{result['maxrss_self_kb'] / 2**20:.2f}), largest of {result['workers']} build "
        f"workers {result['worker_peak_kb'] / 2**20:.2f} GiB; at the peak: "
        + ", ".join(f"{r} {kb / 2**20:.2f}" for r, kb in sorted(result["at_peak_kb"].items())),
    )
    return peak / raw_bytes


def _checks(name: str, result: dict[str, Any]) -> None:
    recall = next((f for c, _, f in result["checks"] if c == "recall"), {})
    passed = all(p for _, p, _ in result["checks"])
    figure(
        f"{name}_checks",
        f"all passed: {passed}; recall {recall.get('recall', 0):.3f} at search_k "
        f"{recall.get('search_k', '?')}",
        "all passed",
    )


def run(args: argparse.Namespace) -> None:
    if args.case == "rollback":
        return _child_rollback(args)
    if args.case == "floor":
        return _child_floor(args)
    from ledger.artifacts.index_build import DEFAULT_SHARDS, DEFAULT_TREES

    n = args.n
    cases = [c for c in args.cases.split(",") if c]
    growth = sorted({int(x) for x in args.growth.split(",") if x} | {n}) if args.growth else []
    print(
        f"machine: {os.cpu_count()} cores, load average {load()}; n={n} d={DIM} "
        f"trees={DEFAULT_TREES} shards={DEFAULT_SHARDS}",
        flush=True,
    )
    raw_bytes = n * DIM * 4
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp_name:
        tmp = Path(tmp_name)
        prefix, steady_home, events = setup_log(args.bootstrap, n, tmp)
        profile_home = tmp / "profile"
        if args.profile:  # a rerun on a rolled-back home keeps its artifact: profile a copy
            shutil.copytree(steady_home, profile_home)
        raw_s, raw_messages = _raw_consume(args.bootstrap, prefix)
        figure("raw_consume_s", f"{raw_s:.2f} ({raw_messages / raw_s:,.0f} messages/s)")
        floor = _floor_case(args, n)
        figure(
            "floor_s",
            f"{floor['total_s']:.2f} (add {floor['add_s']:.1f}, build {floor['build_s']:.1f}, "
            f"save {floor['save_s']:.1f}; {floor['trees']} trees, n_jobs=-1)",
        )
        _memory("floor", floor, raw_bytes)
        results: dict[str, dict[str, Any]] = {}
        if "steady" in cases:
            results["steady"] = rollback_case(args, prefix, steady_home)
            shutil.rmtree(steady_home, ignore_errors=True)
        cold_home = tmp / "cold"
        if "cold" in cases:
            results["cold"] = rollback_case(args, prefix, cold_home)
        if "full-replay" in cases:
            # On the cold case's home (caught up by then); a fresh one otherwise.
            results["full-replay"] = rollback_case(args, prefix, cold_home, full_replay=True)
        shutil.rmtree(cold_home, ignore_errors=True)
        profile_text = None
        if args.profile:
            out = tmp / "profile.txt"
            rollback_case(args, prefix, profile_home, profile_out=str(out))
            profile_text = out.read_text()
        growth_points: dict[int, tuple[float, float]] = {}
        for size in growth:
            if size == n and "steady" in results:
                growth_points[size] = (results["steady"]["total_s"], floor["total_s"])
                continue
            p, home, _ = setup_log(args.bootstrap, size, tmp)
            steady = rollback_case(args, p, home)
            shutil.rmtree(home, ignore_errors=True)
            size_floor = _floor_case(args, size)
            growth_points[size] = (steady["total_s"], size_floor["total_s"])
            figure(
                f"growth_n{size}",
                f"steady {steady['total_s']:.2f} s, floor {size_floor['total_s']:.2f} s",
            )
        broker_rss = _broker_rss()

    figure("log_events", events)
    if broker_rss:
        figure("broker_rss", f"{broker_rss / 2**30:.2f} GiB (the embedded broker holds the log)")
    ratios: dict[str, float] = {}
    for case, result in results.items():
        name = f"rollback_{case.replace('-', '_')}"
        figure(f"{name}_total_s", f"{result['total_s']:.2f}")
        _phases(name, result)
        _checks(name, result)
        ratios[case] = _memory(name, result, raw_bytes)
    if profile_text is not None:
        print(f"profile of the steady case at n={n} (cProfile, main thread only):")
        print(profile_text, flush=True)
    _summary(results, ratios, floor, raw_s, raw_messages, growth_points)


def _broker_rss() -> int:
    """RSS of the embedded broker (a child of this process), if there is one."""
    from benchmarks._common import _descendants

    return sum(rss_kb(p) * 1024 for p in _descendants(os.getpid()) if p != os.getpid())


def _rate(result: dict[str, Any], phase: str) -> tuple[float, float]:
    """Messages per second over a phase's progress calls (the count its last call reported
    over the time between its first and last call), and that time."""
    seconds = messages = 0.0
    for p, first, last, done, _ in result["segments"]:
        if p == phase:
            seconds, messages = seconds + last - first, messages + done
    return (messages / seconds if seconds > 0 else 0.0), seconds


def _summary(
    results: dict[str, dict[str, Any]],
    ratios: dict[str, float],
    floor: dict[str, Any],
    raw_s: float,
    raw_messages: int,
    growth: dict[int, tuple[float, float]],
) -> None:
    if growth and len(growth) > 1:
        small, large = min(growth), max(growth)
        per = {s: (r / s, f / s) for s, (r, f) in growth.items()}
        for s in sorted(per):
            figure(
                f"per_item_us_n{s}",
                f"rollback {per[s][0] * 1e6:.1f}, floor {per[s][1] * 1e6:.1f}",
            )
        figure("floor_per_item_growth", f"{per[large][1] / per[small][1]:.2f}", "n/a: context")
        figure(
            "rollback_per_item_growth",
            f"{per[large][0] / per[small][0]:.2f} (n {small} -> {large})",
            "within 0.8..1.2",
        )
    if "full-replay" in results:
        rate, replay = _rate(results["full-replay"], "replay")
        raw_rate = raw_messages / raw_s
        figure("full_replay_rate", f"{rate:,.0f} messages/s (replay phase {replay:.2f} s)")
        if "steady" in results:
            figure(
                "full_replay_vs_steady",
                f"{results['full-replay']['total_s'] / results['steady']['total_s']:.2f}",
                "n/a: total time of the full-replay rollback / the steady one",
            )
        figure(
            "full_replay_ratio",
            f"{rate / raw_rate:.2f} (replay rate / raw consume rate)",
            ">= 0.5",
        )
    if "full-replay" in ratios:
        figure("full_replay_peak_rss_ratio", f"{ratios.pop('full-replay'):.2f}", "n/a")
    if ratios:
        worst = max(ratios, key=ratios.__getitem__)
        figure("rollback_peak_rss_ratio", f"{ratios[worst]:.2f} ({worst} case)", "<= 1.5")
    if "cold" in results:
        figure(
            "rollback_cold_ratio",
            f"{results['cold']['total_s'] / (floor['total_s'] + raw_s):.2f}",
            "<= 2",
        )
    if "steady" in results:
        figure(
            "rollback_steady_ratio",
            f"{results['steady']['total_s'] / floor['total_s']:.2f}",
            "<= 1.5",
        )
