#!/usr/bin/env python3
"""The project's one benchmark entry point: ``scripts/bench.py NAME [options]``.

Each benchmark prints its figures one per line as ``figure: value (goal ...)``, the
headline ratio last, and exits non-zero only when it could not run (a missed goal is a
figure, not a failure). Benchmarks that need a broker start one: the embedded broker,
or with ``--broker kafka`` a single-node Apache Kafka (``scripts/apache_kafka.py``; needs
java and mvn); ``--bootstrap`` names a running one instead. Each lives in
``scripts/benchmarks/<name>.py`` with ``add_arguments(parser)``, ``run(args)`` and
``NEEDS_BROKER``.

    scripts/bench.py producer
    scripts/bench.py materialise --broker kafka
    scripts/bench.py index --n 50000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchmarks  # noqa: E402  (the folder next to this script)
from apache_kafka import BrokerStartError  # noqa: E402  (next to this script too)

from ledger import EmbeddedBroker, LedgerError  # noqa: E402


@contextlib.contextmanager
def _broker(bootstrap: str | None, kind: str) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
    elif kind == "kafka":
        from apache_kafka import ApacheKafka

        with ApacheKafka() as kafka:
            yield kafka
    else:
        with EmbeddedBroker() as embedded:
            yield embedded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="name", required=True)
    modules = {}
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue  # shared helpers, not a benchmark
        module = importlib.import_module(f"benchmarks.{info.name}")
        modules[info.name] = module
        p = sub.add_parser(info.name, help=(module.__doc__ or "").split("\n")[0])
        p.add_argument("--bootstrap", help="Kafka bootstrap servers of a running broker")
        p.add_argument(
            "--broker",
            choices=("embedded", "kafka"),
            default="embedded",
            help="the broker to start when no --bootstrap is given (kafka: Apache Kafka)",
        )
        module.add_arguments(p)
    args = parser.parse_args(argv)
    module = modules[args.name]
    try:
        if module.NEEDS_BROKER:
            with _broker(args.bootstrap, args.broker) as bootstrap:
                args.bootstrap = bootstrap
                module.run(args)
        else:
            module.run(args)
    except (LedgerError, BrokerStartError) as exc:
        print(f"bench {args.name} could not run: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
