"""The `metasft` command: parse, load the config, call one stage. Commands that read a config take
key=value overrides; those that read a directory (report, data stats, export, compare) do not."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

from metasft.config import ConfigError, load_config
from metasft.errors import MetasftError
from metasft.progress import spoken
from metasft.rundir import REPORT_DIR, REPORT_HTML, VERDICTS_FILE, OutputError

PLOT_SUFFIXES = (".png", ".svg", ".pdf")  # what compare's figure can be saved as
OVERWRITE_HELP = "move what is at --out aside (to a visible OUT.old-<time>) instead of refusing it"


def _command(sub, name: str, help: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand whose --help gives a description and examples."""
    return sub.add_parser(name, help=help, description=description,
                          epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides applied after the YAML, e.g. meta.inner_lr=1e-4 data_root=../shared/data")


def _version() -> str:
    from metasft import __version__
    from metasft.rundir import git_commit
    commit = git_commit()
    return f"metasft {__version__}" + (f" (git {commit})" if commit else "")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metasft", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Does FOMAML on top of SFT give an LLM better few-shot adaptation on math and science "
                    "reasoning than plain SFT? Build task data, train the arms, evaluate, report.",
        epilog="examples:\n  metasft run                                  the embedded default experiment\n"
               "  metasft config show configs/tiny/experiment.yaml meta.inner_lr=1e-4\n"
               "  metasft ls configs/data/embedded.yaml\n"
               "  metasft compare runs/exp1 runs/exp3\n"
               "  metasft launch configs/experiment.yaml --out runs/exp --backend slurm --workers 8 --gpus-per-worker 1\n"
               "`metasft COMMAND --help` describes each command.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (accepted anywhere)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="build or inspect task data",
                          description="Build the meta-training and evaluation tasks of a data config, or count them.")
    data = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    b = _command(data, "build", "build meta-training and evaluation tasks",
                 "Load every source of the config's data.tasks and data.eval_tasks, split each task into "
                 "support/query/val/test (stratified by level, no problem in two files), and write them with a "
                 "manifest.json (counts, seed, sha256 per file).",
                 ["metasft data build configs/data/embedded.yaml --out runs/data",
                  "metasft data build configs/data/math_scheme_a.yaml --out runs/data_a data_root=../shared/data"])
    b.add_argument("config", help="YAML config (its data section is used)")
    b.add_argument("--out", required=True, type=Path,
                   help="directory to write (replaced atomically): new, empty or an earlier build")
    b.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _overrides(b)
    s = _command(data, "stats", "print counts per task, split and level",
                 "Counts per task, split and level from a built data directory's manifest.json (an experiment "
                 "directory of `metasft run` works too: its dataset/ is read). Reads files only: no overrides.",
                 ["metasft data stats runs/data", "metasft data stats runs/embedded_default"])
    s.add_argument("dir", type=Path, help="a `metasft data build --out` directory or an experiment directory")

    t = _command(sub, "train", "train one arm (the config's `arm`) into a run directory",
                 "Train one arm (fomaml | reptile | sft_mixed | sft_task | base) into a run directory: config.yaml, "
                 "manifest.json, metrics.jsonl, train.log (a line per trainer.log_freq steps), checkpoints (trainer.keep_checkpoints "
                 "once finished), adapter (the base arm, which trains nothing: its fresh LoRA's seed).",
                 ["metasft train configs/tiny/fomaml_sft.yaml --out runs/fomaml",
                  "metasft train configs/tiny/baseline_sft.yaml --out runs/sft trainer.paired_run=runs/fomaml",
                  "metasft train configs/tiny/fomaml_sft.yaml --out runs/fomaml --resume"])
    t.add_argument("config", help="YAML config")
    t.add_argument("--out", required=True, type=Path, help="the run directory")
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _overrides(t)

    e = _command(sub, "eval", "few-shot curves and zero-shot transfer for the models in eval.models",
                 "Protocol A (few-shot adaptation curves per task, n_shots and seed) and protocol B (zero-shot on "
                 "unseen tasks) for every model in eval.models, into OUT/results.sqlite (every prediction stored) "
                 "and OUT/eval.log (one accuracy line per cell); under torchrun each rank writes its own "
                 "OUT/results.shard-<rank>.sqlite. Resumable: finished groups are skipped.",
                 ["metasft eval configs/tiny/experiment.yaml --out runs/eval --data runs/data "
                  "eval.models=[base,fomaml=runs/fomaml]"])
    e.add_argument("config", help="YAML config")
    e.add_argument("--out", required=True, type=Path, help="the evaluation directory")
    e.add_argument("--data", type=Path, help="built data directory (default: data.dir, else build into OUT/dataset)")
    e.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _overrides(e)

    r = _command(sub, "report", "write report.md, report.html and plots for an experiment directory",
                 "Write report/ (report.md, report.html, figures, verdicts.json) from an experiment directory's "
                 "files; its settings come from the directory's config.yaml, so it takes no overrides.",
                 ["metasft report runs/embedded_default"])
    r.add_argument("dir", type=Path, help="an experiment directory (`metasft run --out`)")
    r.add_argument("--partial", action="store_true",
                   help="report an evaluation still running or interrupted (the summary says: partial, k of n groups)")

    run = _command(sub, "run", "the whole experiment: data, every arm, evaluation, report",
                   "Data build, every arm of `arms`, evaluation, task similarity and the report, in one directory. "
                   "A rerun skips the stages finished with the same settings; a stage recorded with other settings "
                   "stops the run (use --force or a new --out). Ends by printing the verdicts.",
                   ["metasft run", "metasft run configs/tiny/experiment.yaml --out runs/tiny",
                    "metasft run meta.inner_lr=1e-4 --out runs/lr1e-4",
                    "metasft run configs/full/design.yaml --rehearse data_root=../shared/data"])
    run.add_argument("config", nargs="?", help="default: the embedded experiment (configs/experiment.yaml)")
    run.add_argument("--out", type=Path, default=None,
                     help="the experiment directory (default: runs/embedded_default; with --rehearse runs/<name>_rehearsal)")
    run.add_argument("--rehearse", action="store_true",
                     help="first print what would fail or mislead at full size (sources that cannot load, shot pools, "
                          "answer-only shots, generation caps, memory per stage on --gpu), then run the same study "
                          "cut to the tiny model, a few examples and two steps, to its report (metasft.rehearse)")
    run.add_argument("--gpu", default="h100", help="with --rehearse: the device kind whose memory the plan is checked "
                                                   "against (cpu, h100, a100; default h100)")
    run.add_argument("--force", action="store_true",
                     help="redo the stages whose settings changed since OUT was run, and all that depends on them")
    run.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _overrides(run)

    la = _command(sub, "launch", "the whole experiment as cluster jobs (slurm) or local processes",
                  "The stages of `metasft run` submitted through submitit: the data build and each arm as a job, the "
                  "evaluation as a job array of --workers shards (each its own results store), task similarity and "
                  "the report after them. This command waits for its jobs and resubmits a failed one once; a rerun "
                  "skips finished stages and evaluated groups. The directory is the same as `metasft run`'s.",
                  ["metasft launch configs/full/design.yaml --out runs/design --backend slurm --workers 8 "
                   "--gpus-per-worker 1 --partition gpu --time 720",
                   "metasft launch configs/tiny/experiment.yaml --out runs/tiny --backend local --workers 2"])
    la.add_argument("config", help="YAML config")
    la.add_argument("--out", required=True, type=Path, help="the experiment directory")
    la.add_argument("--backend", required=True, choices=("local", "slurm"),
                    help="slurm: sbatch jobs; local: the same jobs as processes on this machine")
    la.add_argument("--workers", type=int, help="evaluation workers, the array's tasks (default 1)")
    la.add_argument("--gpus-per-worker", type=int, help="GPUs of each training and evaluation job, one process each "
                                                        "(default 0: CPU)")
    la.add_argument("--time", type=int, dest="time_min", help="each job's time limit in minutes (default 240)")
    la.add_argument("--cpus-per-worker", type=int, help="CPUs of each job's process")
    la.add_argument("--mem-gb", type=float, help="memory of each job")
    la.add_argument("--partition", help="slurm partition")
    la.add_argument("--account", help="slurm account")
    la.add_argument("--qos", help="slurm quality of service")
    la.add_argument("--force", action="store_true",
                    help="redo the stages whose settings changed since OUT was run, and all that depends on them")
    la.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    _overrides(la)

    pl = _command(sub, "plan", "estimate each stage's examples, tokens, FLOPs, memory and wall time; nothing runs",
                  "Per stage of `metasft run` on the config: examples and tokens trained, tokens generated, FLOPs, "
                  "memory per process and an estimated wall time on a device kind, from the throughput assumptions "
                  "printed under the table. Estimates, not measurements; no model weights are read.",
                  ["metasft plan", "metasft plan configs/full/design.yaml --gpu h100 --workers 8",
                   "metasft plan configs/tiny/experiment.yaml --throughput my_cpu.yaml eval.seeds=[0]"])
    pl.add_argument("config", nargs="?", help="default: the embedded experiment (configs/experiment.yaml)")
    pl.add_argument("--gpu", default="cpu", metavar="KIND",
                    help="device kind of the throughput table: h100, a100 or cpu (this 2-core machine; the default)")
    pl.add_argument("--workers", type=int, default=1,
                    help="processes the evaluation's groups are split over (default 1)")
    pl.add_argument("--threads", type=int,
                    help="--gpu cpu: torch threads the run will use (default: torch's, which OMP_NUM_THREADS sets)")
    pl.add_argument("--throughput", type=Path, metavar="FILE.yaml",
                    help="replace keys of the device kind's throughput table (metasft.plan.Throughput)")
    _overrides(pl)

    config = sub.add_parser("config", help="show a resolved config",
                            description="Inspect configs without running anything.")
    config = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    cs = _command(config, "show", "print the resolved, validated config; nothing runs",
                  "Print the config as a run would use it: defaults, the YAML with its includes, then the overrides, "
                  "validated (an unknown key or a wrong type is a one-line error).",
                  ["metasft config show configs/experiment.yaml",
                   "metasft config show configs/tiny/experiment.yaml meta.inner_lr=1e-4 arms=[base,fomaml]"])
    cs.add_argument("config", nargs="?", help="default: the embedded experiment (configs/experiment.yaml)")
    _overrides(cs)

    ls = _command(sub, "ls", "list experiment directories, a config's tasks, or (--configs) the shipped configs",
                  "Given a directory (default: runs/): every experiment, training run and evaluation directory at "
                  "or below it, with its config's name, the stages done and the verdicts on the primary claims; a "
                  "single experiment directory also shows its stages and every verdict. Given a config: its "
                  "data.sources and tasks. --configs: the shipped configs (the command in their first comment "
                  "line and their description) and the built-in sources.",
                  ["metasft ls", "metasft ls runs/embedded_default", "metasft ls configs/data/math_scheme_a.yaml",
                   "metasft ls --configs"])
    ls.add_argument("config", nargs="?", metavar="DIR_OR_CONFIG",
                    help="a directory whose experiments to list, or a config whose tasks to list (default: runs/)")
    ls.add_argument("--configs", action="store_true", help="list the shipped configs and the built-in sources")
    _overrides(ls)

    x = _command(sub, "export", "write every stored prediction to JSON lines or CSV",
                 "Every prediction in results.sqlite (or in the shard stores of a sharded evaluation): model, task, "
                 "n_shots, seed, step, question_id, prompt, output, extracted (answer), gold, correct (the verdict), "
                 "timed_out, shot_ids, loss, ...",
                 ["metasft export runs/embedded_default --predictions preds.jsonl",
                  "metasft export runs/eval --predictions preds.csv"])
    x.add_argument("run", type=Path, help="an experiment directory, an evaluation directory or a results.sqlite")
    x.add_argument("--predictions", required=True, type=Path, help="output file: .jsonl or .csv")
    x.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")

    c = _command(sub, "compare", "compare experiment directories: differing config keys, accuracy table, plot",
                 "For each experiment (or evaluation) directory: the config keys whose values differ between them, "
                 "and per (task, n_shots) the final-step accuracy of every model, mean over seeds, with the report's "
                 "95% interval over questions and n; plus a PNG plot in the report's colours and names per arm. "
                 "Each directory once.",
                 ["metasft compare runs/exp1 runs/exp2 runs/exp3 runs/exp4 runs/exp5 --plot sweep.png"])
    c.add_argument("dirs", nargs="+", type=Path, metavar="EXP_DIR", help="experiment or evaluation directories")
    c.add_argument("--plot", type=Path, default=Path("compare.png"), help="where the PNG goes (default: compare.png)")
    c.add_argument("--overwrite", action="store_true", help="replace the plot file if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # torch logs its fake-tensor cache statistics at INFO when the process exits: after an error or
    # Ctrl-C they would follow the one line that says what happened
    logging.getLogger("torch").setLevel(logging.WARNING)
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    # key=value overrides may come before or after options: collect the ones argparse left over
    args, rest = parser.parse_known_args([a for a in argv if a != "--debug"])
    args.debug = debug
    stray = [r for r in rest if "=" not in r or r.startswith("-")]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    try:
        return _dispatch(args)
    except (MetasftError, OSError) as e:  # OSError: a path the user gave cannot be read or written
        if args.debug:
            raise
        print(f"metasft: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"metasft: interrupted: {_kept(args)}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it


def _kept(args) -> str:
    """After Ctrl-C: what the command kept and how to go on, in one line."""
    again = "rerun the same command to go on"
    if args.command in ("run", "launch"):
        return (f"the stages finished in {args.out} are kept and the one that was running continues where it "
                f"stopped; {again}")
    if args.command == "train":
        return f"{args.out} keeps its last checkpoint; rerun with --resume to continue from it"
    if args.command == "eval":
        return f"the groups stored in {args.out} are kept; {again} (it skips them)"
    if args.command == "data" and args.data_command == "build":
        return f"{args.out} is as it was (a build is written at once, at its end); {again}"
    if args.command == "report":
        return f"{args.dir / REPORT_DIR} is as it was (a report is written at once, at its end); {again}"
    if args.command in ("export", "compare"):
        return "nothing was written (its output is written at once, at its end)"
    return "nothing was written"


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, MetasftError) else f"{type(e).__name__}: {text}"


def _dispatch(args) -> int:
    config = getattr(args, "config", None)
    if args.command in ("run", "plan", "config", "ls") and config and "=" in config and not Path(config).is_file():
        args.overrides, args.config = [config, *args.overrides], None  # `metasft run key=value`: no config
    if args.command == "data" and args.data_command == "build":
        cfg = load_config(args.config, args.overrides)
        from metasft.data.build import build_data
        from metasft.data.stats import stats_table
        from metasft.rundir import OutputDir
        with OutputDir(args.out, "data", overwrite=args.overwrite) as claim:
            build_data(cfg, args.out)
            claim.commit()
        print(stats_table(args.out))
        return 0
    if args.command == "data" and args.data_command == "stats":
        from metasft.data.stats import stats_table
        print(stats_table(args.dir))
        return 0
    if args.command == "train":
        from metasft.heap import release_freed
        from metasft.train.run import train
        release_freed(settle=True)  # the imports: out of each later collection's scan
        train(load_config(args.config, args.overrides), args.out, resume=args.resume, overwrite=args.overwrite)
        return 0
    if args.command == "eval":
        from metasft.eval.protocols import run_eval
        from metasft.eval.specs import parse_model_specs
        from metasft.heap import release_freed
        from metasft.models import check_model
        from metasft.rundir import OutputDir
        cfg = load_config(args.config, args.overrides)
        if not cfg.eval.models:
            raise ConfigError("eval.models is empty: list run directories, adapter hub ids or 'base'")
        models = parse_model_specs(cfg.eval.models)
        check_model(cfg.model)
        data_dir = args.data or (Path(cfg.data.dir) if cfg.data.dir else None)
        with OutputDir(args.out, "eval", overwrite=args.overwrite) as claim:
            if data_dir is None:
                from metasft.train.distributed import World
                from metasft.train.run import ensure_data
                from metasft.manifests import started_record
                claim.start(started_record("eval"))
                data_dir = ensure_data(cfg, args.out, World())
            # a group stored is a record worth keeping: a failure after it leaves the directory to resume
            release_freed(settle=True)  # the imports: out of each later collection's scan
            run_eval(cfg, data_dir, models, args.out, after_group=lambda group: claim.commit())
            claim.commit()
        return 0
    if args.command == "report":
        from metasft.report import write_report
        from metasft.rundir import hold
        with hold(args.dir) if args.dir.is_dir() else contextlib.nullcontext():  # one writer per directory
            print(write_report(args.dir, partial=args.partial))
        return 0
    if args.command == "run":
        from metasft.pipeline import run_experiment
        cfg = load_config(_default_config(args.config), args.overrides)
        if args.rehearse:
            from metasft.rehearse import check
            cfg, findings = check(cfg, args.gpu)
            print(f"rehearsal of {cfg.name.removesuffix('_rehearsal')}: {len(findings)} finding(s) at full size"
                  + (":" if findings else ""))
            print("\n".join("  " + f.line() for f in findings))
            args.out = args.out or Path("runs") / cfg.name
        args.out = args.out or Path("runs/embedded_default")
        started = time.monotonic()
        out = run_experiment(cfg, args.out, force=args.force, overwrite=args.overwrite)
        _print_outcome(out, time.monotonic() - started)
        return 0
    if args.command == "launch":
        from metasft.launch import ClusterArgs, launch_experiment
        options = ("backend", "workers", "gpus_per_worker", "time_min", "cpus_per_worker", "mem_gb", "partition",
                   "account", "qos")
        cluster = ClusterArgs(**{k: getattr(args, k) for k in options if getattr(args, k) is not None})
        started = time.monotonic()
        out = launch_experiment(load_config(args.config, args.overrides), args.out, cluster, force=args.force,
                                overwrite=args.overwrite)
        _print_outcome(out, time.monotonic() - started)
        return 0
    if args.command == "plan":
        from metasft.plan import plan
        cfg = load_config(_default_config(args.config), args.overrides)
        print(plan(cfg, args.config or "the embedded default (configs/experiment.yaml)", args.gpu, args.workers,
                   args.throughput, args.threads))
        return 0
    if args.command == "config":
        cfg = load_config(_default_config(args.config), args.overrides)
        import yaml
        from metasft.config import to_dict
        print(f"# resolved from {_default_config(args.config)}" + (f" with {args.overrides}" if args.overrides else ""))
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
        return 0
    if args.command == "ls":
        from metasft import catalog
        if args.configs:
            from metasft.pipeline import REPO_CONFIGS
            print(catalog.catalogue(REPO_CONFIGS))
        elif (args.config and Path(args.config).is_dir()) or not (args.config or args.overrides):
            print(catalog.directories(Path(args.config or "runs")))
        else:
            print(catalog.config_tasks(load_config(args.config, args.overrides), args.config or "the default config"))
        return 0
    if args.command == "export":
        from metasft.eval.results import ResultsUnion, export_predictions, find_results
        _new_file(args.predictions, "--predictions", args.overwrite)
        paths = find_results(args.run)
        with ResultsUnion(paths) as stored:
            n = export_predictions(stored, args.predictions)
        source = paths[0] if len(paths) == 1 else f"{len(paths)} stores in {paths[0].parent}"
        print(f"wrote {n} predictions from {source} to {args.predictions}")
        return 0
    if args.command == "compare":
        from metasft.compare import load_experiments, plot, render, shown_path
        _new_file(args.plot, "--plot", args.overwrite)
        if args.plot.suffix.lower() not in PLOT_SUFFIXES:
            raise OutputError(f"--plot {args.plot}: give a file ending in {', '.join(PLOT_SUFFIXES)}")
        experiments = load_experiments(args.dirs)
        print(render(experiments))
        print(f"\nplot: {shown_path(plot(experiments, args.plot))}")
        return 0
    raise AssertionError(args)


def _new_file(path: Path, flag: str, overwrite: bool) -> None:
    """An output file of export / compare: an existing one is the user's until --overwrite says otherwise."""
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{flag} {path} exists; pass --overwrite to replace it, or choose another file")


def _print_outcome(out: Path, seconds: float) -> None:
    """A finished experiment: where its report is, how long this command took, and the verdicts (the
    report's summary lines, `verdicts.summary_lines`)."""
    print(f"report: {out / REPORT_DIR / REPORT_HTML}")
    print(f"total wall time: {spoken(seconds)}")
    verdicts = out / REPORT_DIR / VERDICTS_FILE
    if verdicts.is_file():
        from metasft.stats.verdicts import read_verdicts, summary_lines
        print("verdicts (status, the estimate behind it; details in the report):")
        print("\n".join("  " + line for line in summary_lines(read_verdicts(verdicts))))


def _default_config(config: str | None) -> str | Path:
    """`config`, or the embedded experiment's YAML when none is given."""
    from metasft.pipeline import DEFAULT_CONFIG
    if config is not None:
        return config
    if not DEFAULT_CONFIG.is_file():
        raise ConfigError(f"the default experiment config {DEFAULT_CONFIG} is missing (run from a metasft checkout)")
    return DEFAULT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
