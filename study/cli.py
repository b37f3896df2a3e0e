"""`python -m study search|reconcile`: the contract's flags, exit codes and one-line errors.

TensorFlow, MLflow, Optuna and scikit-learn load only after the arguments, the space and
the config have been checked (`check_fast`), so a typo is answered in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from study.exit_codes import ExitCode
from study.paths import (DEFAULT_SPACE, PROJECT_ROOT, default_storage, default_tracking_uri, local_store_path,
                         tracking_uri_problem)

if TYPE_CHECKING:  # pydantic and PyYAML load only once the arguments parse
    from study.campaign import Continuation
    from study.config import SearchConfig
    from study.sweep import Factor, SweepPlan

EXIT_BAD_INPUT = ExitCode.BAD_INPUT


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; the contract wants exactly one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    search = commands.add_parser("search", help="run (or resume) Optuna studies of Keras CNNs")
    add_search_arguments(search)
    search.add_argument("--workers", type=int, default=1,
                        help="worker processes on this machine sharing each study (a supervisor starts them)")

    # Started by the supervisor of `search --workers N`; also usable by hand on other machines.
    worker = commands.add_parser("worker", help="one worker of an existing study (started by search --workers)")
    add_search_arguments(worker)

    campaign = commands.add_parser("campaign", help="one regime's pool of i.i.d. unpruned trials (resumes)")
    add_campaign_arguments(campaign)

    sweep = commands.add_parser("sweep", help="paired single-factor experiments: each base at every level (resumes)")
    add_sweep_arguments(sweep)
    sweep.add_argument("--workers", type=positive_int, default=1,
                       help="worker processes sharing each factor's arms (a supervisor starts them)")

    # Started by the supervisor of `sweep --workers N`, one factor at a time.
    sweep_worker = commands.add_parser("sweep-worker", help="one worker of a sweep factor's study (started by "
                                       "sweep --workers)")
    add_sweep_arguments(sweep_worker)
    sweep_worker.add_argument("--worker-index", type=non_negative_int, required=True)

    reconcile = commands.add_parser("reconcile", help="repair MLflow from Optuna (ends runs of finished or lost trials)")
    reconcile.add_argument("--study-name", default=None, help="default: every study in the storage")
    reconcile.add_argument("--storage", default=None)
    reconcile.add_argument("--tracking-uri", default=None)
    return parser


def add_search_arguments(search: argparse.ArgumentParser) -> None:
    search.add_argument("--space", default=str(DEFAULT_SPACE), help="search-space YAML")
    search.add_argument("--trials", type=int, default=40,
                        help="finished trials (COMPLETE+PRUNED+FAIL; draws skipped by train.max_cost do not count) the study should reach; re-runs resume")
    search.add_argument("--timeout", type=float, default=None, help="seconds for this invocation")
    search.add_argument("--experiment", default=None, help="MLflow experiment (default: the space's name)")
    search.add_argument("--study-name", default=None, help="default <experiment>-seed<seed>")
    search.add_argument("--seed", type=non_negative_int, default=0)
    search.add_argument("--replicates", type=int, default=1, help="K studies with seeds seed..seed+K-1")
    search.add_argument("--sampler", choices=("tpe", "qmc", "random", "gp", "cmaes"), default="tpe")
    search.add_argument("--pruner", choices=("hyperband", "median", "none"), default="hyperband")
    search.add_argument("--objective", choices=("val_accuracy", "val_loss", "both"), default="val_accuracy")
    search.add_argument("--storage", default=None, help="*.journal path or RDB URL (default mlruns/optuna.journal)")
    search.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI or mlruns/mlflow.db")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override data.*, train.* or pin params.<name>; repeatable")
    search.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX .gz files")
    search.add_argument("--trial-artifacts", choices=("full", "lean"), default="full",
                        help="lean: no learning-curve PNG and no best-model upload per trial (campaigns)")
    search.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not enqueue the space's baseline as the first trial (a campaign's i.i.d. pool)")
    search.add_argument("--max-consecutive-failures", type=int, default=5)
    search.add_argument("--heartbeat-interval", type=int, default=30, help="RDB storages: seconds")
    search.add_argument("--grace-period", type=int, default=90, help="RDB storages: seconds")
    search.add_argument("--max-retry", type=int, default=1, help="RDB storages: retries of a stale trial")
    search.add_argument("--worker-index", type=non_negative_int, default=default_worker_index(),
                        help="sampler seed offset (seed + index) when several machines share a study; default "
                             "$STUDY_WORKER_INDEX, $SLURM_ARRAY_TASK_ID, $JOB_COMPLETION_INDEX or 0")


def add_campaign_arguments(campaign: argparse.ArgumentParser) -> None:
    from study.campaign import DEFAULT_TRIALS, REGIMES, SPACES

    campaign.add_argument("--regime", required=True, choices=tuple(REGIMES))
    campaign.add_argument("--data", choices=tuple(SPACES), default="fashion_mnist",
                          help="digits: a smoke run below the floors (CI, demos)")
    campaign.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="finished trials to reach; re-runs resume")
    campaign.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    campaign.add_argument("--timeout", type=float, default=None, help="seconds for this invocation")
    campaign.add_argument("--seed", type=non_negative_int, default=None,
                          help="default: the seed of this store's study, else the next one no published study used")
    campaign.add_argument("--published", default=None, metavar="DIR",
                          help="the published pool it continues (default results/<experiment>)")
    campaign.add_argument("--storage", default=None)
    campaign.add_argument("--tracking-uri", default=None)
    campaign.add_argument("--data-dir", default=None)
    campaign.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def add_sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    from study.campaign import SPACES
    from study.sweep import DEFAULT_PAIRS

    sweep.add_argument("--factor", dest="factors", action="append", required=True, metavar="NAME=v1,v2[,...]",
                       help="a knob (or data.label_noise, data.class_imbalance, or decay=l2,adamw[,none]: the "
                            "L2-against-AdamW control) and its levels, the first the reference; repeatable: one "
                            "study per factor")
    sweep.add_argument("--pairs", type=positive_int, default=DEFAULT_PAIRS,
                       help="base configurations, each trained at every level plus a replicate; re-runs resume")
    sweep.add_argument("--data", choices=tuple(SPACES), default="fashion_mnist",
                       help="digits: a smoke run below the floors (CI, demos)")
    sweep.add_argument("--timeout", type=float, default=None, help="seconds for this invocation")
    sweep.add_argument("--seed", type=non_negative_int, default=None,
                       help="draws the bases and the pairs' seeds; default: the seed of this store's study of "
                            "the factor, else the next one no published study of it used")
    sweep.add_argument("--published", default=None, metavar="DIR",
                       help="the published sweeps it continues (default results/sweeps)")
    sweep.add_argument("--storage", default=None)
    sweep.add_argument("--tracking-uri", default=None)
    sweep.add_argument("--data-dir", default=None)
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def sweep_plans(args: argparse.Namespace) -> list[tuple[SearchConfig, Factor]]:
    """Each factor checked, with the config of the `search` its study is (study/sweep.py);
    raises SweepError, SpaceError, ConfigError or ValidationError before anything is created."""
    from study.campaign import floor_problem
    from study.config import check_config
    from study.sweep import (DATA_FACTORS, DECAY_FACTOR, Factor, SweepError, check_data_factor,
                             check_decay_factor, check_knob_factor, check_overrides, condition_switch, parse_factor)

    parsed = [parse_factor(text) for text in args.factors]
    names = [name for name, _ in parsed]
    for name in names:
        if names.count(name) > 1:
            raise SweepError(f"--factor {name}: given twice; one --factor per knob, with all its levels")
    plans = []
    for name, levels in parsed:
        factor = check_data_factor(name, levels) if name in DATA_FACTORS else Factor(name, levels, levels)
        check_overrides(name, args.overrides, None)
        config = sweep_search_config(args, factor, args.seed or 0, args.pairs)
        check_config(config, 0)
        if name == DECAY_FACTOR:
            factor = check_decay_factor(levels, config.space, config.space_file)
        elif not factor.changes_data:
            factor = check_knob_factor(name, levels, config.space, config.space_file)
            switch = condition_switch(config.space, name)
            check_overrides(name, args.overrides, switch[0] if switch else None)
        problem = floor_problem(config.space) if args.data == "fashion_mnist" else None
        if problem:
            raise SweepError(problem)
        plans.append((config, factor))
    return plans


def worker_plan(args: argparse.Namespace, plans: list[tuple[SearchConfig, Factor]]) -> SweepPlan:
    """A sweep worker joins one factor's study as its supervisor named it: by seed and pairs,
    not by where the published sweeps stand (the supervisor worked that out); raises SweepError."""
    from study.sweep import SweepError, SweepPlan

    if len(plans) != 1:
        raise SweepError(f"--factor: a sweep worker trains one factor's study, not {len(plans)}")
    if args.seed is None:
        raise SweepError("--seed: a sweep worker needs the seed of the study it joins")
    config, factor = plans[0]
    return SweepPlan(config, factor, args.pairs)


def store_passthrough(args: argparse.Namespace) -> list[str]:
    """The flags a campaign or sweep hands on to the `search` it is, as given."""
    passthrough: list[str] = []
    for flag, value in (("--timeout", args.timeout), ("--storage", args.storage),
                        ("--tracking-uri", args.tracking_uri), ("--data-dir", args.data_dir)):
        if value is not None:
            passthrough += [flag, str(value)]
    return passthrough


def sweep_search_config(args: argparse.Namespace, factor: Factor, seed: int, pairs: int) -> SearchConfig:
    """The config of the `search` one factor's study is (study/sweep.py)."""
    from study.sweep import search_argv

    return search_config(build_parser().parse_args(
        search_argv(factor, args.data, pairs, seed, args.overrides, store_passthrough(args))))


def sweep_continuations(args: argparse.Namespace,
                        plans: list[tuple[SearchConfig, Factor]]) -> "list[SweepPlan] | int":
    """Each factor's study where it stands in the published sweeps (study/campaign.py's
    continuation, counted in pairs), the factors with nothing left to run left out; or the
    exit code of bad input (2) or of nothing to run (0)."""
    from study.campaign import CampaignError, continuation, continuation_line
    from study.storage import StorageError, study_names
    from study.sweep import SweepError, SweepPlan, experiment_name, published_pairs, study_prefix

    folder = Path(args.published) if args.published else PROJECT_ROOT / "results" / (
        "sweeps" if args.data == "fashion_mnist" else experiment_name(args.data))
    try:
        if args.published and not folder.is_dir():
            raise CampaignError(f"--published {folder}: no such folder")
        published, local = published_pairs(folder), study_names(storage_spec(args))
        continued = [(config, factor, continuation(study_prefix(factor), args.seed, args.pairs, published, local))
                     for config, factor in plans]
    except (CampaignError, SweepError, StorageError) as exc:
        print(fast_error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    out = []
    for config, factor, plan in continued:
        line = continuation_line(f"sweep {factor.text}", study_prefix(factor), plan, "complete pairs")
        if line:
            print(line, flush=True)
        if plan.trials > 0:
            out.append(SweepPlan(sweep_search_config(args, factor, plan.seed, plan.trials), factor, plan.trials))
    return out or 0


def campaign_search_args(args: argparse.Namespace, plan: "Continuation") -> argparse.Namespace:
    """The campaign as the `search` it is (study/campaign.py); raises CampaignError."""
    from study.campaign import search_argv

    passthrough = ["--workers", str(args.workers), "--seed", str(plan.seed), *store_passthrough(args)]
    return build_parser().parse_args(search_argv(args.regime, args.data, plan.trials, args.overrides, passthrough))


def campaign_plan(args: argparse.Namespace) -> "Continuation | int":
    """Where this store's study stands in the published pool, with the banner printed; or
    the exit code when there is nothing to run (0) or the input is bad (2)."""
    from study.campaign import CampaignError, banner, continuation_line, experiment_name
    from study.storage import StorageError

    try:
        plan = campaign_continuation(args)
    except (CampaignError, StorageError) as exc:
        print(fast_error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    line = continuation_line("campaign", experiment_name(args.data, args.regime), plan, "finished trials")
    if plan.trials <= 0:
        print(f"{line}: nothing to run", flush=True)
        return 0
    print(banner(args.regime, args.data, args.trials), flush=True)
    if line:
        print(line, flush=True)
    return plan


def campaign_continuation(args: argparse.Namespace) -> "Continuation":
    """This store's study in the published pool (study/campaign.py); raises CampaignError or
    StorageError. Reads the storage, so it runs after the arguments parse."""
    from study.campaign import CampaignError, continuation, experiment_name, published_folder, published_studies
    from study.storage import study_names

    experiment = experiment_name(args.data, args.regime)
    folder = Path(args.published) if args.published else published_folder(experiment)
    if args.published and not folder.is_dir():
        raise CampaignError(f"--published {folder}: no such folder")
    local = {name for name in study_names(storage_spec(args)) if name.startswith(f"{experiment}-seed")}
    return continuation(experiment, args.seed, args.trials, published_studies(folder), local)


def positive_int(text: str) -> int:
    value = int(text)  # argparse reports a ValueError as "invalid positive_int value"
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)  # argparse reports a ValueError as "invalid non_negative_int value"
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; must be >= 0")
    return value


def default_worker_index() -> int:
    for var in ("STUDY_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def storage_spec(args: argparse.Namespace) -> str:
    """--storage, else $STUDY_STORAGE (keeps a password off command lines), else the journal."""
    return args.storage or os.environ.get("STUDY_STORAGE") or default_storage()


def search_config(args: argparse.Namespace) -> SearchConfig:
    from study.config import SearchConfig
    from study.space import load_space

    overrides = list(args.overrides) + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
    space = load_space(args.space, overrides)
    return SearchConfig(
        space_file=args.space, space=space, trials=args.trials, timeout=args.timeout,
        experiment=args.experiment or space.name, study_name=args.study_name, seed=args.seed,
        replicates=args.replicates, sampler=args.sampler, pruner=args.pruner, objective=args.objective,
        storage=storage_spec(args), tracking_uri=args.tracking_uri or default_tracking_uri(),
        workers=getattr(args, "workers", 1),
        max_consecutive_failures=args.max_consecutive_failures, heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period, max_retry=args.max_retry, trial_artifacts=args.trial_artifacts,
        baseline=args.baseline)


def _quiet_libraries() -> None:
    """Keep the progress lines readable: library chatter that is not actionable for a user."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*is (an )?experimental.*")  # optuna's QMC, group=True
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables"
    logging.getLogger("mlflow.keras.save").setLevel(logging.ERROR)  # "no model signature"


def cmd_search(args: argparse.Namespace, config: SearchConfig) -> int:
    from study.inputs import check_inputs

    _quiet_libraries()
    if config.workers > 1:  # the supervisor checks inputs itself, then hands the same flags on
        from study.supervisor import run_supervised

        return run_supervised(config, args)
    checked = check_inputs(config)  # before TensorFlow loads: bad input is answered in a second
    from study.search import run_search

    return run_search(config, checked, args.worker_index)


def cmd_sweep(args: argparse.Namespace, plans: list[SweepPlan]) -> int:
    _quiet_libraries()
    from study.sweep_runner import run_sweep

    return run_sweep(plans, args)


def cmd_sweep_worker(args: argparse.Namespace, plans: list[SweepPlan]) -> int:
    from study.workers import configure_threads

    configure_threads()  # before anything imports TensorFlow
    _quiet_libraries()
    from study.sweep_runner import run_sweep_worker

    return run_sweep_worker(plans[0], args.data, args.worker_index)


def cmd_worker(args: argparse.Namespace, config: SearchConfig) -> int:
    from study.workers import configure_threads

    configure_threads()  # before anything imports TensorFlow
    from study.inputs import check_inputs

    _quiet_libraries()
    checked = check_inputs(config)
    from study.workers import run_worker

    return run_worker(config, checked, args.worker_index)


def check_reconcile_paths(args: argparse.Namespace) -> None:
    """reconcile repairs what exists: a mistyped path must not become a new, empty store, and
    an unreachable server must be one line, not minutes of MLflow's retries."""
    from study.config import ConfigError
    from study.secrets import mask_secrets

    tracking_uri = args.tracking_uri or default_tracking_uri()
    for flag, spec in (("--storage", storage_spec(args)), ("--tracking-uri", tracking_uri)):
        path = local_store_path(spec)
        if path is not None and not path.is_file():
            raise ConfigError(f"{flag} {mask_secrets(spec)}: no such file; reconcile repairs existing studies only")
    problem = tracking_uri_problem(tracking_uri)
    if problem:
        raise ConfigError(f"--tracking-uri {mask_secrets(tracking_uri)}: {mask_secrets(problem)}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    import optuna

    from study.inputs import check_tracking_uri, open_tracker
    from study.reconcile import reconcile_study
    from study.storage import open_storage

    storage = open_storage(storage_spec(args))
    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)  # database servers too: one bounded try, not MLflow's retries
    tracker = open_tracker(tracking_uri)
    names = [args.study_name] if args.study_name else optuna.get_all_study_names(storage)
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            print(f"study: error: --study-name {name}: no such study in the storage", file=sys.stderr)
            return EXIT_BAD_INPUT
        experiment_id = tracker.experiment_id(study.user_attrs.get("experiment", ""))
        if experiment_id is None:
            print(f"{name}: no MLflow experiment recorded; nothing to repair")
            continue
        counts = reconcile_study(study, tracker, experiment_id)
        print(f"{name}: {counts['lost_trials_failed']} lost trials marked FAIL (worker_lost), "
              f"{counts['runs_ended']} MLflow runs ended")
    return ExitCode.OK


def check_fast(args: argparse.Namespace) -> SearchConfig | None:
    """Everything that needs only YAML and pydantic: the SearchConfig of search and worker,
    the local paths of reconcile. Raises SpaceError, ConfigError or ValidationError."""
    if args.command == "reconcile":
        check_reconcile_paths(args)
        return None
    from study.config import check_config

    config = search_config(args)
    check_config(config, args.worker_index)
    return config


def fast_error_line(exc: Exception) -> str:
    """One line naming the flag, file or key (pydantic's location becomes the flag)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        key = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        return f"study: error: {key}: {first['msg']}"
    from study.secrets import mask_secrets

    return f"study: error: {mask_secrets(str(exc))}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic import ValidationError

    from study.campaign import CampaignError, Continuation, floor_problem
    from study.config import ConfigError
    from study.space import SpaceError
    from study.sweep import SweepError

    if args.command in ("sweep", "sweep-worker"):
        try:
            plans = sweep_plans(args)
            if args.command == "sweep-worker":
                return run_command(args, [worker_plan(args, plans)])
        except (SpaceError, ConfigError, ValidationError, SweepError) as exc:
            print(fast_error_line(exc), file=sys.stderr)
            return EXIT_BAD_INPUT
        continued = sweep_continuations(args, plans)
        return continued if isinstance(continued, int) else run_command(args, continued)
    campaign = args if args.command == "campaign" else None
    try:
        if campaign is not None:  # checked first as given; where it stands in the pool comes next
            args = campaign_search_args(campaign, Continuation(campaign.seed or 0, campaign.trials, {}))
        config = check_fast(args)
        problem = floor_problem(config.space) if campaign and campaign.data == "fashion_mnist" else None
        if problem:
            raise CampaignError(problem)
    except (SpaceError, ConfigError, ValidationError, CampaignError) as exc:
        print(fast_error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    if campaign is not None:
        plan = campaign_plan(campaign)
        if isinstance(plan, int):
            return plan
        args = campaign_search_args(campaign, plan)
        config = check_fast(args)
    return run_command(args, config)


def run_command(args: argparse.Namespace, config: SearchConfig | list[SweepPlan] | None) -> int:
    """The command itself, after the fast checks (a sweep's are its plans); the heavy
    libraries load from here on."""
    from study.data import DataError
    from study.inputs import BadInput
    from study.secrets import mask_logging, mask_secrets
    from study.storage import StorageError

    mask_logging()  # every command: reconcile prints MLflow and Optuna log lines too
    # Each carries one finished line naming the file or flag and the key.
    handled: tuple[type[BaseException], ...] = (DataError, BadInput, StorageError)
    try:
        if args.command == "reconcile":
            return cmd_reconcile(args)
        return {"search": cmd_search, "worker": cmd_worker, "sweep": cmd_sweep,
                "sweep-worker": cmd_sweep_worker}[args.command](args, config)
    except handled as exc:
        print(f"study: error: {mask_secrets(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - e.g. the tracking server went away mid-study
        import traceback

        # The traceback is for debugging; the last line is the one to read. Both masked,
        # since a client error can quote a URL with its password.
        print(mask_secrets("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        first = (str(exc).splitlines() or [""])[0]
        print(f"study: error: {type(exc).__name__}: {mask_secrets(first)}", file=sys.stderr)
        return ExitCode.ERROR
