"""The `metasft` command: parse, load the config, call one stage. Every command takes key=value overrides."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from metasft.config import ConfigError, load_config, save_config
from metasft.data.records import DataError
from metasft.train.batching import TruncationError
from metasft.train.checkpoint import CheckpointError
from metasft.train.common import NonFiniteLoss


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="metasft", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or inspect task data").add_subparsers(dest="data_command", required=True)
    b = data.add_parser("build", help="build meta-training and evaluation tasks")
    b.add_argument("config")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("overrides", nargs="*", metavar="key=value")
    s = data.add_parser("stats", help="print counts per task, split and level")
    s.add_argument("dir", type=Path)

    t = sub.add_parser("train", help="train one arm (the config's `arm`) into a run directory")
    t.add_argument("config")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = _parser()
    # key=value overrides may come before or after options: collect the ones argparse left over
    args, rest = parser.parse_known_args(argv)
    stray = [r for r in rest if "=" not in r or r.startswith("-")]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    try:
        return _dispatch(args)
    except (ConfigError, DataError, CheckpointError, NonFiniteLoss, TruncationError) as e:
        print(f"metasft: error: {e}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command == "data" and args.data_command == "build":
        from metasft.data.build import build_data
        cfg = load_config(args.config, args.overrides)
        build_data(cfg, args.out)
        save_config(cfg, args.out / "config.yaml")
        from metasft.data.stats import stats_table
        print(stats_table(args.out))
        return 0
    if args.command == "data" and args.data_command == "stats":
        from metasft.data.stats import stats_table
        print(stats_table(args.dir))
        return 0
    if args.command == "train":
        from metasft.train.run import train
        train(load_config(args.config, args.overrides), args.out, resume=args.resume)
        return 0
    raise AssertionError(args)


if __name__ == "__main__":
    sys.exit(main())
