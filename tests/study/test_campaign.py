"""`make campaign`: floors, regimes, and one real digits smoke campaign through the export,
whose CSV report must agree with the MLflow-mode report."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from study.campaign import FLOORS, REGIMES, floor_problem, regime_overrides, search_argv
from study.space import load_space
from tests.conftest import PROJECT_ROOT, run_cli

CNN = PROJECT_ROOT / "search_spaces" / "cnn.yaml"


def test_regimes_are_rho_10_and_20_percent_noise_and_nothing_else() -> None:
    assert REGIMES == {"balanced": {"class_imbalance": 1.0, "label_noise": 0.0},
                       "imbalance": {"class_imbalance": 10.0, "label_noise": 0.0},
                       "label_noise": {"class_imbalance": 1.0, "label_noise": 0.2}}
    argv = search_argv("imbalance", "fashion_mnist", 500, [], [])
    overrides = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--set"]
    space = load_space(CNN, overrides)
    assert (space.data.class_imbalance, space.data.label_noise) == (10.0, 0.0)
    assert (space.data.train_size, space.data.val_size, space.data.test_size, space.train.epochs) == (
        3000, 2000, 2000, 5)
    assert floor_problem(space) is None
    assert argv[argv.index("--sampler") + 1] == "random" and argv[argv.index("--pruner") + 1] == "none"


@pytest.mark.parametrize(("override", "problem"), [
    ("data.train_size=2999", "--set data.train_size=2999: below the campaign floor of 3000"),
    ("data.val_size=1999", "--set data.val_size=1999: below the campaign floor of 2000"),
    ("data.test_size=500", "--set data.test_size=500: below the campaign floor of 2000"),
    ("train.epochs=4", "--set train.epochs=4: below the campaign floor of 5"),
])
def test_each_floor_is_named_when_broken(override: str, problem: str) -> None:
    assert floor_problem(load_space(CNN, [override])).startswith(problem)
    assert floor_problem(load_space(CNN, ["data.train_size=null", "data.test_size=null"])) is None  # all data


def test_a_regime_knob_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match="the label_noise regime fixes data.label_noise"):
        regime_overrides("label_noise", ["data.label_noise=0.1"])
    assert regime_overrides("balanced", ["data.split_seed=3"]) == ["data.class_imbalance=1.0", "data.label_noise=0.0"]


def test_below_the_floors_is_exit_2_one_line_and_nothing_created(tmp_path: Path) -> None:
    stores = ["--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    for extra, flag in ((["--set", f"train.epochs={FLOORS.epochs - 1}"], "train.epochs"),
                        (["--set", "data.label_noise=0.3"], "data.label_noise")):
        proc = run_cli("study", "campaign", "--regime", "label_noise", *stores, *extra, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and flag in proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- one real smoke campaign on digits, shared by every assertion below ------------------

TRIALS = 3
SMOKE = "campaign-balanced-digits-smoke"


def make_campaign(folder: Path, trials: int) -> subprocess.CompletedProcess:
    # One process, so that the counts below are exact (N workers may finish up to N - 1
    # trials past the target); `make campaign`'s default of 2 is checked on its own.
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "campaign", "DATA=digits", f"TRIALS={trials}",
         "WORKERS=1", "SET=train.epochs=2", f"STORAGE={folder / 'optuna.journal'}",
         f"TRACKING=sqlite:///{folder / 'mlflow.db'}"],
        capture_output=True, text=True, timeout=1200)


@pytest.mark.parametrize("target", ["campaign", "sweep"])
def test_make_campaign_and_sweep_run_two_workers_unless_told_otherwise(target: str) -> None:
    def planned(*words: str, workers_env: str | None = None) -> list[str]:
        # Not what a parent make passes down (`make test WORKERS=1` reaches here in MAKEFLAGS).
        env = {key: value for key, value in os.environ.items()
               if key not in ("WORKERS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        if workers_env is not None:
            env["WORKERS"] = workers_env
        # -o setup: the plan of the program's command lines only, not of the venv's install.
        plan = subprocess.run(["make", "--no-print-directory", "-n", "-o", "setup", "-C", str(PROJECT_ROOT),
                               target, *words], capture_output=True, text=True, check=True, env=env, timeout=60)
        commands = [line for line in plan.stdout.splitlines() if f"-m study {target}" in line]
        # the sweep runs three times: the standard set, the L2 dose-response, the decay control
        assert len(commands) == (3 if target == "sweep" else 1), plan.stdout
        return commands

    def workers(command: str) -> str | None:
        words = command.split()
        return words[words.index("--workers") + 1] if "--workers" in words else None

    assert [workers(command) for command in planned()] == ["2"] * len(planned())
    assert {workers(command) for command in planned("WORKERS=1")} == {None}
    assert {workers(command) for command in planned("WORKERS=3")} == {"3"}
    assert {workers(command) for command in planned(workers_env="1")} == {None}
    # Given but empty: refused before any target runs (without -o setup: setup must not run).
    for words, env in ((["WORKERS="], {}), ([], {"WORKERS": ""})):
        refused = subprocess.run(["make", "--no-print-directory", "-C", str(PROJECT_ROOT), target, *words,
                                  "VENV=/nonexistent/venv"], capture_output=True, text=True, timeout=60,
                                 env={**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS")},
                                      **env})
        assert (refused.returncode, refused.stdout) == (2, ""), refused.stdout
        assert refused.stderr.count("\n") == 1 and "WORKERS is empty" in refused.stderr, refused.stderr


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`make campaign DATA=digits` twice (3 trials, then resumed to 4), the export, and the
    report in both modes."""
    folder = tmp_path_factory.mktemp("campaign")
    first, resumed = make_campaign(folder, TRIALS), None
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    resumed = make_campaign(folder, TRIALS + 1)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    export = folder / "results" / "epochs.csv.gz"
    proc = run_cli("analysis", "export", "--experiment", SMOKE, "--tracking-uri", tracking, "--out", str(export))
    assert proc.returncode == 0, proc.stderr
    assert f"--val-size {int(pd.read_csv(export)['data.n_val'].iloc[0])}" in proc.stdout
    reports = {}
    for mode, flags in (("mlflow", ["--experiment", SMOKE, "--tracking-uri", tracking, "--no-log"]),
                        ("csv", ["--csv", str(export), "--epoch-col", "epoch", "--test-accuracy-col", "test_accuracy",
                                 "--state-col", "state", "--crossentropy-col", "val_crossentropy",
                                 # the export's data.n_val, as `analysis export` prints it
                                 "--val-size", str(int(pd.read_csv(export)["data.n_val"].iloc[0]))])):
        proc = run_cli("analysis", "report", *flags, "--out", str(folder / mode), "--bootstrap", "200")
        assert proc.returncode == 0, proc.stderr
        reports[mode] = json.loads((folder / mode / "summary.json").read_text())
    published = folder / "published"
    proc = run_cli("analysis", "publish", "--experiment", SMOKE, "--tracking-uri", tracking, "--storage",
                   str(folder / "optuna.journal"), "--out", str(published), "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    return {"first": first.stdout, "resumed": resumed.stdout, "export": pd.read_csv(export),
            "tracking": tracking, "reports": reports, "published": published, "journal": folder / "optuna.journal"}


@pytest.mark.slow
def test_smoke_campaign_says_it_is_below_the_floors_and_shows_rate_and_eta(smoke: dict) -> None:
    assert "SMOKE RUN below the campaign floors" in smoke["first"]
    lines = [line for line in smoke["first"].splitlines() if " COMPLETE " in line or " FAIL " in line]
    assert len(lines) == TRIALS
    assert all(re.search(r"\| \d+/3 finished .*\| \d+ trials/h, elapsed \S+, ETA \S+$", line) for line in lines)


@pytest.mark.slow
def test_a_rerun_resumes_the_same_study_for_the_missing_trials_only(smoke: dict) -> None:
    # One new counted trial, numbered after the first run's (draws over the cost cap are
    # skipped, PRUNED, and not counted).
    finished = re.findall(r"trial (\d+) (?:COMPLETE|FAIL)", smoke["resumed"])
    assert len(finished) == 1 and int(finished[0]) >= TRIALS, smoke["resumed"]
    assert re.findall(r"trial \d+ PRUNED(?! \(over_cost_cap\))", smoke["resumed"]) == []
    assert smoke["export"]["study"].unique().tolist() == [f"{SMOKE}-seed0"]


@pytest.mark.slow
def test_campaign_trials_are_random_unpruned_and_lean(smoke: dict) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(smoke["tracking"])
    experiment = client.get_experiment_by_name(SMOKE)
    runs = client.search_runs([experiment.experiment_id], "tags.run_role = 'trial'")
    assert len(runs) == TRIALS + 1
    for run in runs:
        assert run.data.params["trial_artifacts"] == "lean"
        assert (run.data.params["baseline"], run.data.params["train.max_cost"]) == ("False", "6.0")
        assert (run.data.params["sampler"], run.data.params["pruner"]) == ("random", "none")
        names = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert "history.csv" in names and "learning_curves.png" not in names and "model" not in names
        assert "best_model_logged" not in run.data.tags


@pytest.mark.slow
def test_export_has_one_row_per_trial_and_epoch_in_the_published_column_order(smoke: dict) -> None:
    table = smoke["export"]
    assert list(table.columns[:7]) == ["study", "trial", "epoch", "val_loss", "val_crossentropy", "val_accuracy",
                                       "test_accuracy"]
    assert list(table.columns[-3:]) == ["experiment", "run_id", "git_commit"]
    assert len(table) == (TRIALS + 1) * 2 and table.groupby("trial")["epoch"].apply(list).tolist() == [[0, 1]] * 4
    assert {"learning_rate", "batch_size", "data.n_val", "train.epochs", "loss", "lr", "state"} <= set(table.columns)
    assert table["run_id"].nunique() == TRIALS + 1 and table["git_commit"].str.fullmatch(r"[0-9a-f]{40}").all()


# Keys whose content comes from inputs only the MLflow store has (hyperparameters, the
# searched space, the sampler tags) or that say where the data came from.
ONLY_FROM_MLFLOW = {"source", "warnings", "explanations", "boundary_checks"}


def disagreements(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) & set(b) - (ONLY_FROM_MLFLOW if not path else set()))
                for d in disagreements(a[key], b[key], f"{path}/{key}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in disagreements(x, y, f"{path}[{i}]")]
    same = a == b or (a != a and b != b) or (isinstance(a, float) and isinstance(b, float) and abs(a - b) < 1e-9)
    return [] if same else [f"{path}: {a!r} vs {b!r}"]


@pytest.mark.slow
def test_report_on_the_export_agrees_with_the_mlflow_report(smoke: dict) -> None:
    mlflow_mode, csv_mode = smoke["reports"]["mlflow"], smoke["reports"]["csv"]
    # The experiment is named by the store in one mode and by the file in the other.
    for summary in (mlflow_mode, csv_mode):
        summary["by_experiment"] = list(summary["by_experiment"].values())
    assert disagreements(mlflow_mode, csv_mode) == []
    for key in ("trial_level", "epoch_level", "variants", "l2_changes_loss_pick", "study_size", "by_experiment",
                "pool"):
        assert key in mlflow_mode and key in csv_mode, key  # the comparison covered them
    assert "val_crossentropy" in csv_mode["variants"]


@pytest.mark.slow
def test_publish_writes_the_export_the_report_and_a_readme_with_the_counts(smoke: dict) -> None:
    import optuna

    published = smoke["published"]
    assert {"epochs.csv.gz", "summary.json", "report.md", "index.html", "README.md", "pool_vs_k.png"} <= {
        p.name for p in published.iterdir()}
    assert pd.read_csv(published / "epochs.csv.gz").drop(columns=["git_commit"]).equals(
        smoke["export"].drop(columns=["git_commit"]))
    # The same report as `analysis report` in MLflow mode with the same resamples.
    # (by_experiment aside: another test turns the fixture's into a list)
    mine = {k: v for k, v in json.loads((published / "summary.json").read_text()).items() if k != "by_experiment"}
    assert disagreements(mine, {k: v for k, v in smoke["reports"]["mlflow"].items() if k != "by_experiment"}) == []
    assert mine["pool"]["trials"] == TRIALS + 1
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(smoke["journal"])))
    trials = optuna.load_study(study_name=f"{SMOKE}-seed0", storage=storage).trials
    skipped = sum(t.user_attrs.get("failure_reason") == "over_cost_cap" for t in trials)
    readme = (published / "README.md").read_text()
    assert f"Trials trained: {TRIALS + 1} " in readme
    assert f"skipped by the cost cap (no training, no MLflow run): {skipped} of {len(trials)}." in readme
    assert f"python -m analysis publish --experiment {SMOKE}" in readme and "--crossentropy-col val_crossentropy" in readme


def test_publish_without_the_journal_is_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    proc = run_cli("analysis", "publish", "--experiment", "campaign-balanced", "--storage", str(tmp_path / "no.journal"),
                   "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no.journal" in proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- the same pool continued on a fresh store (a new machine) ------------------------------

@pytest.fixture(scope="module")
def continued(smoke: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The published smoke pool (seed0, 4 trials) continued to 6 on an empty store, then
    published into the same folder; then republished from the first store."""
    import shutil

    folder, copies = tmp_path_factory.mktemp("continued"), tmp_path_factory.mktemp("copies")
    published = shutil.copytree(smoke["published"], copies / "published")  # the smoke tests read the original
    store = ["--storage", str(folder / "optuna.journal"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    flags = ["--regime", "balanced", "--data", "digits", "--set", "train.epochs=2", "--published",
             str(published), *store]
    same_seed = run_cli("study", "campaign", *flags, "--seed", "0", "--trials", str(TRIALS + 3))
    files_after_refusal = sorted(p.name for p in folder.iterdir())
    run = run_cli("study", "campaign", *flags, "--trials", str(TRIALS + 3), timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    nothing = run_cli("study", "campaign", *flags, "--trials", str(TRIALS + 1))
    before = pd.read_csv(published / "epochs.csv.gz")
    (published / "axis_of_an_older_report.png").write_bytes(b"")  # a figure today's report does not draw
    publish = run_cli("analysis", "publish", "--experiment", SMOKE, *store, "--out", str(published),
                      "--bootstrap", "200")
    assert publish.returncode == 0, publish.stderr[-3000:]
    merged = pd.read_csv(published / "epochs.csv.gz")
    figures = sorted(figure.name for figure in published.glob("*.png"))
    again = run_cli("analysis", "publish", "--experiment", SMOKE, "--tracking-uri", smoke["tracking"], "--storage",
                    str(smoke["journal"]), "--out", str(published), "--bootstrap", "200")
    assert again.returncode == 0, again.stderr[-3000:]
    return {"same_seed": same_seed, "files_after_refusal": files_after_refusal, "run": run.stdout,
            "nothing": nothing, "before": before, "merged": merged, "figures": figures,
            "again": pd.read_csv(published / "epochs.csv.gz"), "published": published}


@pytest.mark.slow
def test_a_published_seed_missing_from_this_store_is_refused_before_anything_is_created(continued: dict) -> None:
    proc = continued["same_seed"]
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"--seed 0: {SMOKE}-seed0 is published from another store" in proc.stderr and "seed is 1" in proc.stderr
    assert continued["files_after_refusal"] == []


@pytest.mark.slow
def test_a_fresh_store_continues_the_pool_with_the_next_seed_up_to_the_total(continued: dict) -> None:
    assert (f"continues the published pool: {TRIALS + 1} finished trials of {SMOKE}-seed0 ({TRIALS + 1}) are "
            f"from another store; this store's study {SMOKE}-seed1 runs to 2") in continued["run"]
    assert len(re.findall(r"trial \d+ (?:COMPLETE|FAIL)", continued["run"])) == 2
    # Asking for fewer trials than the pool already has runs nothing.
    assert continued["nothing"].returncode == 0 and "nothing to run" in continued["nothing"].stdout


@pytest.mark.slow
def test_publishing_the_continuation_carries_the_published_study_and_reads_one_pool(continued: dict) -> None:
    merged, before = continued["merged"], continued["before"]
    trials = merged.drop_duplicates(["study", "trial"])
    assert trials["study"].value_counts().to_dict() == {f"{SMOKE}-seed0": TRIALS + 1, f"{SMOKE}-seed1": 2}
    # The carried rows are the published ones, unchanged; the new seed drew other nets.
    carried = merged[merged["study"] == f"{SMOKE}-seed0"].reset_index(drop=True)
    assert carried[before.columns].drop(columns=["git_commit"]).equals(before.drop(columns=["git_commit"]))
    assert not set(trials["learning_rate"].round(12)[trials["study"].str.endswith("seed1")]) & set(
        before["learning_rate"].round(12))
    summary = json.loads((continued["published"] / "summary.json").read_text())
    assert summary["pool"]["trials"] == int((trials["state"] == "COMPLETE").sum())
    studies = json.loads((continued["published"] / "studies.json").read_text())
    assert sorted(studies) == [f"{SMOKE}-seed0", f"{SMOKE}-seed1"]
    readme = (continued["published"] / "README.md").read_text()
    assert f"Trials trained: {TRIALS + 3} " in readme and f"`{SMOKE}-seed1`: 2 trained" in readme
    assert "--one-pool" in readme
    # The folder's figures are the pool report's own: an older report's are gone.
    assert "pool_vs_k.png" in continued["figures"] and "axis_of_an_older_report.png" not in continued["figures"]
    # Republishing from the first store keeps the second store's study.
    assert len(continued["again"]) == len(merged)
    assert set(continued["again"]["study"]) == set(merged["study"])


def test_publishing_a_store_with_fewer_trials_of_a_published_study_is_refused(tmp_path: Path) -> None:
    from analysis.errors import AnalysisInputError
    from analysis.publish import Published, with_published

    def rows(study: str, trials: range) -> pd.DataFrame:
        return pd.DataFrame({"study": study, "trial": list(trials), "epoch": 0, "state": "COMPLETE",
                             "data.n_train": 3000, "train.epochs": 5})

    record = {"states": {"COMPLETE": 3}, "skipped_over_cap": 0, "draws": 3, "trial_hours": 0.1, "wall_hours": 0.2}
    published = Published(pd.concat([rows("a", range(3)), rows("b", range(2))]), {"a": record, "b": record}, "")
    with pytest.raises(AnalysisInputError, match="study a has 3 published trials and 2 in this store"):
        with_published(rows("a", range(2)), {"a": record}, published, tmp_path)
    table, studies = with_published(rows("a", range(4)), {"a": record}, published, tmp_path)
    assert table.groupby("study").size().to_dict() == {"a": 4, "b": 2} and sorted(studies) == ["a", "b"]
    other = rows("c", range(2)).assign(**{"train.epochs": 9})
    with pytest.raises(AnalysisInputError, match="train.epochs is 5 in the published studies and 9 here"):
        with_published(other, {"c": record}, published, tmp_path)


def test_continuation_takes_the_lowest_seed_no_carried_study_used_and_counts_their_trials() -> None:
    from study.campaign import CampaignError, continuation

    published = {"x-seed0": 70, "x-seed2": 5}
    assert continuation("x", None, 500, published, set()) == (1, 425, published)
    # A study this store holds resumes here: its published trials are this store's own.
    assert continuation("x", None, 500, published, {"x-seed0"}) == (0, 495, {"x-seed2": 5})
    assert continuation("x", 3, 500, published, set()).seed == 3
    with pytest.raises(CampaignError, match="--seed 2: x-seed2 is published from another store.*seed is 1"):
        continuation("x", 2, 500, published, set())


def test_a_folder_published_before_studies_json_gives_its_counts_from_its_readme() -> None:
    from analysis.publish import legacy_record

    trials = pd.DataFrame({"state": ["COMPLETE"] * 3 + ["FAIL"]})
    # As results/campaign-balanced/README.md said when first published (2026-11-24).
    readme = ("- Trials trained: 73 (71 COMPLETE, 2 FAIL); draws skipped by the cost cap (no training, no MLflow "
              "run): 64 of 137.\n- Wall time: 1.79 h from the first trial's start to the last one's end (2.29 h "
              "inside trials; runs paused and resumed in between count in the first).\n")
    record = legacy_record(readme, trials)
    assert record == {"states": {"COMPLETE": 3, "FAIL": 1}, "skipped_over_cap": 64, "draws": 137,
                      "trial_hours": 2.29, "wall_hours": 1.79}
    sweep = legacy_record("- Wall time: 2.34 h from the first trial's start to the last one's end, pauses between "
                          "runs included (1.92 trial-hours).", trials)
    assert (sweep["wall_hours"], sweep["trial_hours"], sweep["draws"]) == (2.34, 1.92, None)
    assert legacy_record("no such lines", trials) is None


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("studies.json", b"{not json", "its studies.json cannot be read"),
    ("studies.json", b'{"campaign-balanced-seed0": 72}', "its studies.json is not a study -> counts record"),
    ("epochs.csv.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage", "its epochs.csv.gz cannot be read"),
])
def test_a_corrupt_published_folder_is_one_clear_error(name: str, content: bytes, problem: str, tmp_path: Path) -> None:
    from analysis.errors import AnalysisInputError
    from analysis.publish import read_published

    pd.DataFrame({"study": ["a"], "trial": [0], "epoch": [0]}).to_csv(tmp_path / "epochs.csv.gz", index=False)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(AnalysisInputError, match=problem):
        read_published(tmp_path)
