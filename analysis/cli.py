"""`python -m analysis report`: read trials, analyse, draw, write, and log the report.

Bad input (unknown or empty experiment, missing columns, empty table) exits 2 with one
line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import os
import hashlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.errors import AnalysisInputError
from study.contract import MACHINE_PARAMS, ROLE_REPORT, RUN_ROLE
from study.paths import PROJECT_ROOT, default_tracking_uri, tracking_server_problem
from study.secrets import mask_secrets

if TYPE_CHECKING:  # importing sources loads pandas: not before the input is checked
    from analysis.sources import Dataset

DEFAULT_SPACE = PROJECT_ROOT / "search_spaces" / "cnn.yaml"
REPORTS_DIR = PROJECT_ROOT / "reports"
MAX_FOLDER_BYTES = 120  # well under the 255 bytes a file name may have


def default_experiment() -> str:
    """The default space's `name`, as `make search` uses it, read without the study package."""
    try:
        match = re.search(r"^name:\s*['\"]?([^'\"#\n]+?)['\"]?\s*(#.*)?$",
                          DEFAULT_SPACE.read_text(), flags=re.MULTILINE)
    except OSError:
        match = None
    if not match:
        raise AnalysisInputError(f"no --experiment given and no `name:` in {DEFAULT_SPACE}")
    return match.group(1).strip()


def default_out(experiments: list[str]) -> Path:
    """`reports/<cleaned name>`: always one folder inside `reports/`, whatever the names.

    Only word characters, `.`, `+` and `-` stay; leading dots become `_`, so an experiment
    (or CSV stem) `..` can neither climb into the project root nor make a hidden folder,
    and an overlong name is cut and kept unique by a hash of the whole."""
    name = "+".join(experiments)
    folder = re.sub(r"[^\w.+-]", "_", name)
    folder = re.sub(r"^\.+", lambda dots: "_" * len(dots.group()), folder)
    if len(folder.encode()) > MAX_FOLDER_BYTES:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        folder = folder.encode()[:MAX_FOLDER_BYTES - 9].decode(errors="ignore") + "-" + digest
    return REPORTS_DIR / (folder or "report")


def _one_line(text: str) -> str:
    """Quoted when it holds a newline or another unprintable character: a path given with
    --out cannot forge a line of the output."""
    return text if text.isprintable() else repr(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis",
                                description="How often minimal validation loss and maximal "
                                            "validation accuracy pick different trials and epochs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="write summary.json, report.md, index.html and figures")
    src = r.add_argument_group("MLflow input (default)")
    src.add_argument("--experiment", action="append", default=[], metavar="NAME",
                     help="experiment to analyse; repeat to compare several "
                          "(default: the default search space's experiment)")
    src.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the project's "
                          "mlruns/mlflow.db)")
    src.add_argument("--no-log", action="store_true",
                     help=f"do not log the report to a {RUN_ROLE}={ROLE_REPORT} run")
    tab = r.add_argument_group("table input")
    tab.add_argument("--csv", type=Path, metavar="FILE", help="a CSV or Parquet table of trials")
    tab.add_argument("--study-col", default="study")
    tab.add_argument("--trial-col", default="trial")
    tab.add_argument("--loss-col", default="val_loss")
    tab.add_argument("--accuracy-col", default="val_accuracy")
    tab.add_argument("--test-accuracy-col", default=None)
    tab.add_argument("--epoch-col", default=None, help="rows are epochs; adds the epoch level")
    tab.add_argument("--crossentropy-col", default=None,
                     help="with --epoch-col: val_loss without the L2 term; adds the val_crossentropy variant")
    tab.add_argument("--epochs", type=int, default=None, metavar="N",
                     help="epoch budget of every trial (default: each study's largest epoch count)")
    tab.add_argument("--val-size", type=int, default=None, metavar="N",
                     help="validation images per trial, for the rule 'accuracy within noise, then "
                          "loss' (without it that rule is listed as not available; MLflow runs "
                          "carry data.n_val, and this fills in only where a run lacks it)")
    tab.add_argument("--state-col", default=None,
                     help="column with COMPLETE/PRUNED/FAIL (default: all rows COMPLETE)")
    tab.add_argument("--one-pool", action="store_true",
                     help="the studies are segments of one pool of i.i.d. trials (a campaign continued "
                          "on several stores): analyse them as one study, trials named study/trial")
    tab.add_argument("--explain-col", action="append", default=[], metavar="COL",
                     help="numeric column to relate to disagreement; repeatable")
    r.add_argument("--out", type=Path, default=None,
                   help="output directory (default: reports/<experiment>/)")
    r.add_argument("--scoring", choices=["best", "final"], default="best",
                   help="score a trial by its best epoch or its last epoch")
    r.add_argument("--include-pruned", action="store_true", help="count PRUNED trials too")
    r.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples")
    r.add_argument("--bootstrap-seed", type=int, default=0, metavar="SEED")
    r.add_argument("--sweep-k", type=int, default=10, metavar="K",
                   help="a sweep table (columns factor, level, pair, arm): the study size at which "
                        "each arm's P(disagree | k) is compared (needs k pairs)")
    r.add_argument("--noise-replicates", type=int, default=200, metavar="N",
                   help="bootstrap replicates over validation images for the validation-noise "
                        "section (MLflow input with outcomes.npz; 0 skips it)")
    _store_commands(sub)
    _compare_command(sub)
    return p


def _store_commands(sub: argparse._SubParsersAction) -> None:
    """`export` and `publish`: a store's trials as one table, and a campaign's results folder."""
    x = sub.add_parser("export", help="one CSV row per trial and epoch (metrics, params, run id, commit)")
    x.add_argument("--experiment", action="append", required=True, metavar="NAME")
    x.add_argument("--tracking-uri", default=None)
    x.add_argument("--out", type=Path, required=True, help="e.g. results/<campaign>/epochs.csv.gz")
    pub = sub.add_parser("publish", help="a campaign's (or sweep's) results/<experiment>/: export, report and README.md")
    pub.add_argument("--experiment", required=True, metavar="NAME", help="e.g. campaign-balanced")
    pub.add_argument("--tracking-uri", default=None)
    pub.add_argument("--storage", default=None, help="the campaign's Optuna journal (default: STUDY_STORAGE "
                                                     "or mlruns/optuna.journal)")
    pub.add_argument("--out", type=Path, default=None, help="default results/<experiment>/")
    pub.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples")


def _compare_command(sub: argparse._SubParsersAction) -> None:
    """`compare`: published campaigns side by side."""
    cmp = sub.add_parser("compare", help="published campaigns' regimes side by side, each difference tested")
    cmp.add_argument("--csv", type=Path, action="append", required=True, metavar="FILE",
                     help="a campaign's epochs.csv.gz (twice or more; the first is the reference)")
    cmp.add_argument("--out", type=Path, required=True, help="e.g. results/regimes/")
    cmp.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples per regime")
    cmp.add_argument("--permutations", type=int, default=2000, metavar="N", help="permutations per pair")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--k", type=int, nargs="+", default=[10, 20], metavar="K",
                     help="study sizes to quote (each at most the smallest campaign's trials)")


def _log_report(tracking_uri: str, experiment: str, out: Path, summary: dict) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(exp.experiment_id, run_name="report", tags={
        RUN_ROLE: ROLE_REPORT, "experiments": ",".join(summary["by_experiment"]),
        "loss_metric": summary["loss_metric"], "scoring": summary["scoring"]})
    rate = summary["trial_level"]["rate"]
    if rate == rate:  # NaN is not a metric MLflow should show as a number
        client.log_metric(run.info.run_id, "trial_level_disagreement_rate", rate)
    client.log_artifacts(run.info.run_id, str(out))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def report(args: argparse.Namespace) -> int:
    # Plotting and statistics load only after the input is known to be good, so bad input
    # is answered quickly.
    _check_report_args(args)
    ds, tracking_uri = _report_input(args)
    # A sweep's arms are checked before anything is computed or written.
    sweep = _sweep_input(args, ds) if args.csv is not None else None
    from analysis import figures, report as report_doc
    from analysis.summary import analyse

    out = args.out or default_out(ds.experiments)
    analysis = analyse(ds, scoring=args.scoring, include_pruned=args.include_pruned,
                       n_boot=args.bootstrap, seed=args.bootstrap_seed, val_size=args.val_size)
    if sweep is not None:
        from analysis.sweeps import analyse_sweep

        arms, epochs, running, mixed, superseded = sweep
        analysis.summary["sweep"] = analyse_sweep(arms, epochs, n_boot=args.bootstrap, seed=args.bootstrap_seed,
                                                  k=args.sweep_k, running=running, mixed=mixed,
                                                  superseded=superseded)
    if tracking_uri is not None and args.noise_replicates:
        from analysis.outcomes import iter_study_outcomes
        from analysis.store import open_store
        from analysis.summary import add_validation_noise

        add_validation_noise(analysis, iter_study_outcomes(open_store(tracking_uri), ds.trials),
                             replicates=args.noise_replicates, seed=args.bootstrap_seed,
                             n_boot=args.bootstrap)
    figs = figures.draw_all(analysis, out)
    title = "Loss vs accuracy picks: " + ", ".join(map(report_doc.literal, ds.experiments))
    files = report_doc.write(analysis, figs, out, title=title)
    print(f"wrote {len(files)} files to {_one_line(str(out))}")
    if tracking_uri is not None and not args.no_log:
        run_id = _log_report(tracking_uri, ds.experiments[0], out, analysis.summary)
        print(f"logged to run {run_id} ({RUN_ROLE}={ROLE_REPORT}) in experiment {ds.experiments[0]!r}")
    return 0


def _check_report_args(args: argparse.Namespace) -> None:
    """The flags' own limits, before any input is read."""
    if args.bootstrap < 0:
        raise AnalysisInputError("--bootstrap must be >= 0")
    if args.noise_replicates < 0 or args.noise_replicates == 1:
        raise AnalysisInputError(f"--noise-replicates {args.noise_replicates}: give 0 (skip) or "
                                 "at least 2 (a standard error needs two replicates)")
    if args.val_size is not None and args.val_size < 1:
        raise AnalysisInputError(f"--val-size {args.val_size}: the number of validation images "
                                 "must be >= 1")
    if args.one_pool and args.csv is None:
        raise AnalysisInputError("--one-pool reads a table: give --csv")
    if args.csv is not None and args.experiment:
        raise AnalysisInputError("use either --csv or --experiment, not both")


def _report_input(args: argparse.Namespace) -> tuple[Dataset, str | None]:
    """The dataset from --csv or the MLflow store, and the store's URI (None for a table)."""
    from analysis import sources

    sources.arrow_allocates_with_malloc()
    if args.csv is not None:
        return sources.load_table(args.csv, study_col=args.study_col, trial_col=args.trial_col,
                                  loss_col=args.loss_col, accuracy_col=args.accuracy_col,
                                  test_accuracy_col=args.test_accuracy_col, epoch_col=args.epoch_col,
                                  crossentropy_col=args.crossentropy_col,
                                  explain_cols=args.explain_col, include_pruned=args.include_pruned,
                                  state_col=args.state_col, epochs=args.epochs, one_pool=args.one_pool), None
    experiments = list(dict.fromkeys(args.experiment)) or [default_experiment()]
    tracking_uri = args.tracking_uri or default_tracking_uri()
    problem = tracking_server_problem(tracking_uri)
    if problem:
        raise AnalysisInputError(f"--tracking-uri {tracking_uri}: {problem}")
    return sources.load_mlflow(experiments, tracking_uri, include_pruned=args.include_pruned), tracking_uri


def _table_columns(path: Path) -> list[str]:
    """A table's column names, without reading its rows."""
    if path.suffix.lower() in {".parquet", ".pq"}:
        import pyarrow.parquet

        return list(pyarrow.parquet.read_schema(path).names)
    import pandas as pd

    return list(pd.read_csv(path, nrows=0).columns)


def _sweep_input(args: argparse.Namespace, ds):
    """A sweep table's arms (checked) and its epochs with val_ece; None for any other table.
    Only the columns the sweep needs beyond the loader's are read again."""
    import pandas as pd

    from analysis import sweeps

    columns = _table_columns(args.csv)
    if not sweeps.is_sweep(columns):
        return None
    if args.one_pool:
        raise AnalysisInputError(f"--one-pool: {args.csv} is a sweep table, whose trials are paired arms within "
                                 "their studies, not one pool of i.i.d. trials; drop --one-pool")
    if ds.epochs is None:
        raise AnalysisInputError(f"{args.csv}: a sweep table (columns {', '.join(sweeps.ARM_COLUMNS)}) "
                                 "needs --epoch-col: its verdicts are per epoch")
    if args.sweep_k < 2:
        raise AnalysisInputError(f"--sweep-k {args.sweep_k}: a study size must be >= 2")
    wanted = [c for c in dict.fromkeys([args.study_col, args.trial_col, args.epoch_col, *sweeps.ARM_COLUMNS,
                                        args.state_col, "val_ece", *MACHINE_PARAMS]) if c and c in columns]
    if args.csv.suffix.lower() in {".parquet", ".pq"}:
        raw = pd.read_parquet(args.csv, columns=wanted)
    else:  # levels and pair ids as written, not as numbers
        raw = pd.read_csv(args.csv, usecols=wanted,
                          dtype={c: str for c in (*sweeps.ARM_COLUMNS, *MACHINE_PARAMS) if c in wanted})
    raw, superseded = sweeps.drop_superseded(raw, args.study_col, args.trial_col, args.state_col)
    arms, running = sweeps.split_running_pairs(sweeps.arms_table(raw, args.study_col, args.trial_col))
    epochs = sweeps.with_epoch_metric(ds.epochs, raw, "val_ece", study_col=args.study_col,
                                      trial_col=args.trial_col, epoch_col=args.epoch_col,
                                      epoch_base=ds.source.get("epoch_base", 0))
    mixed = sweeps.mixed_pairs(arms, raw, list(MACHINE_PARAMS), args.study_col, args.trial_col)
    return arms, epochs, running, mixed, superseded


def export(args: argparse.Namespace) -> int:
    from analysis.export import csv_flags, export as write_export

    tracking_uri = args.tracking_uri or default_tracking_uri()
    table = write_export(list(dict.fromkeys(args.experiment)), tracking_uri, args.out)
    print(f"wrote {len(table)} rows ({table['run_id'].nunique()} trials) to {_one_line(str(args.out))}; "
          f"analyse it with: python -m analysis report --csv {_one_line(str(args.out))} {csv_flags(table)}")
    return 0


def publish(args: argparse.Namespace) -> int:
    from analysis.publish import publish as write_results
    from study.paths import default_storage

    if args.bootstrap < 0:
        raise AnalysisInputError("--bootstrap must be >= 0")
    out = write_results(args.experiment, args.tracking_uri or default_tracking_uri(),
                        args.storage or os.environ.get("STUDY_STORAGE") or default_storage(), args.out or PROJECT_ROOT / "results" / args.experiment,
                        args.bootstrap)
    print(f"published {_one_line(args.experiment)} to {_one_line(str(out))}")
    return 0


def compare(args: argparse.Namespace) -> int:
    if len(args.csv) < 2:
        raise AnalysisInputError("compare needs --csv twice or more (one campaign's epochs.csv.gz each)")
    for flag, value in (("--bootstrap", args.bootstrap), ("--permutations", args.permutations)):
        if value < 0:
            raise AnalysisInputError(f"{flag} {value}: must be >= 0")
    if min(args.k) < 2:
        raise AnalysisInputError(f"--k {min(args.k)}: a study of fewer than 2 trials has nothing to disagree about")
    for path in args.csv:
        if not path.is_file():
            raise AnalysisInputError(f"--csv {_one_line(str(path))}: no such file")
    if args.out.exists() and not args.out.is_dir():
        raise AnalysisInputError(f"--out {_one_line(str(args.out))}: exists and is not a folder")
    from analysis.regimes_report import run

    files = run(args.csv, args.out, n_boot=args.bootstrap, n_perm=args.permutations, seed=args.seed, ks=args.k)
    print(f"wrote {len(files)} files to {_one_line(str(args.out))}")
    return 0


COMMANDS = {"export": export, "report": report, "publish": publish, "compare": compare}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AnalysisInputError as exc:
        print(f"error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
