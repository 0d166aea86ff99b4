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

    e = sub.add_parser("eval", help="few-shot curves and zero-shot transfer for the models in eval.models")
    e.add_argument("config")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--data", type=Path, help="built data directory (default: data.dir, else build into OUT/dataset)")
    e.add_argument("overrides", nargs="*", metavar="key=value")

    r = sub.add_parser("report", help="write report.md, report.html and plots for an experiment directory")
    r.add_argument("dir", type=Path)

    run = sub.add_parser("run", help="the whole experiment: data, every arm, evaluation, report")
    run.add_argument("config", nargs="?", help="default: the embedded experiment (configs/experiment.yaml)")
    run.add_argument("--out", type=Path, default=Path("runs/embedded_default"))
    run.add_argument("--force", action="store_true",
                     help="redo the stages whose settings changed since OUT was run, and all that depends on them")
    run.add_argument("overrides", nargs="*", metavar="key=value")
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
    if args.command == "eval":
        from metasft.eval.protocols import run_eval
        from metasft.eval.specs import parse_model_specs
        cfg = load_config(args.config, args.overrides)
        data_dir = args.data or (Path(cfg.data.dir) if cfg.data.dir else None)
        if data_dir is None:
            from metasft.train.distributed import World
            from metasft.train.run import ensure_data
            data_dir = ensure_data(cfg, args.out, World())
        if not cfg.eval.models:
            raise ConfigError("eval.models is empty: list run directories, adapter hub ids or 'base'")
        run_eval(cfg, data_dir, parse_model_specs(cfg.eval.models), args.out)
        return 0
    if args.command == "report":
        from metasft.report import write_report
        print(write_report(args.dir))
        return 0
    if args.command == "run":
        from metasft.pipeline import DEFAULT_CONFIG, run_experiment
        if args.config and "=" in args.config and not Path(args.config).is_file():
            args.overrides, args.config = [args.config, *args.overrides], None  # `metasft run key=value`
        config = args.config or DEFAULT_CONFIG
        if args.config is None and not Path(config).is_file():
            raise ConfigError(f"the default experiment config {config} is missing (run from a metasft checkout)")
        out = run_experiment(load_config(config, args.overrides), args.out, force=args.force)
        print(out / "report" / "report.md")
        return 0
    raise AssertionError(args)


if __name__ == "__main__":
    sys.exit(main())
