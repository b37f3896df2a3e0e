"""Search-space parsing and the exit-2 contract for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.sampling import baseline_params
from study.space import SpaceError, load_space
from tests.conftest import PROJECT_ROOT, run_cli

SPACES = sorted((PROJECT_ROOT / "search_spaces").glob("*.yaml"))
CNN = PROJECT_ROOT / "search_spaces" / "cnn.yaml"

MINIMAL = """
name: t
params:
  lr: {type: float, low: 0.001, high: 0.1, log: true, role: nuisance}
  schedule: {type: categorical, choices: [constant, exponential], role: nuisance}
  decay: {type: float, low: 0.5, high: 0.9, role: nuisance, condition: {schedule: exponential}, default: 1.0}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_parse_with_a_role_on_every_knob(path: Path) -> None:
    space = load_space(path)
    assert space.params
    assert {hp.role for hp in space.params.values()} <= {"scientific", "nuisance", "fixed"}
    assert set(baseline_params(space)) <= set(space.searched())


def test_default_space_covers_the_contract() -> None:
    space = load_space(CNN)
    for knob in ("n_conv_blocks", "filters", "filter_growth", "kernel_size", "l2", "use_l2", "dropout",
                 "batch_norm", "augment", "rotation", "shift", "zoom", "flip", "contrast", "lr_schedule",
                 "learning_rate", "optimizer", "momentum", "batch_size"):
        assert knob in space.params, knob
    assert space.params["kernel_size"].choices == [3, 5, 7]
    assert set(space.params["lr_schedule"].choices) == {"constant", "exponential", "step", "cosine_warmup",
                                                        "reduce_on_plateau"}
    assert set(space.params["optimizer"].choices) == {"adam", "sgd", "rmsprop"}
    assert space.params["l2"].log and space.params["l2"].default == 0.0  # reachable through use_l2
    assert space.params["decay_rate"].condition == {"lr_schedule": "exponential"}


def test_conditional_knob_is_active_only_under_its_parent(tmp_path: Path) -> None:
    decay = load_space(write(tmp_path, MINIMAL)).params["decay"]
    assert decay.is_active({"schedule": "exponential"})
    assert not decay.is_active({"schedule": "constant"})


def test_overrides_set_fixed_values_and_pin_searched_ones() -> None:
    space = load_space(CNN, ["data.train_size=2000", "train.epochs=2", "params.learning_rate=3.0"])
    assert space.data.train_size == 2000 and space.train.epochs == 2
    assert space.params["learning_rate"].role == "fixed" and space.params["learning_rate"].value == 3.0
    assert "learning_rate" not in baseline_params(space)
    assert space.sha() != load_space(CNN).sha()


def test_pinning_a_parent_keeps_its_children_valid() -> None:
    space = load_space(CNN, ["params.lr_schedule=constant"])
    assert not space.params["decay_rate"].is_active({"lr_schedule": "constant"})


@pytest.mark.parametrize(("text", "fragment"), [
    (MINIMAL + "  bogus_key_here: 1\n", "params.bogus_key_here"),
    (MINIMAL.replace("name: t", "name: t\ncolour: red"), "colour"),
    (MINIMAL.replace("low: 0.001", "low: abc"), "params.lr.low"),
    (MINIMAL.replace("low: 0.001, high: 0.1", "low: 0.5, high: 0.1"), "low (0.5) > high (0.1)"),
    (MINIMAL.replace("choices: [constant, exponential]", "choices: []"), "non-empty choices"),
    (MINIMAL + "data: {name: imagenet}\n", "unknown dataset 'imagenet'"),
    (MINIMAL.replace("schedule: exponential}", "schedule: cosine}"), "not a choice of schedule"),
    ("name: t\nparams: [1, 2\n", "not valid YAML"),
])
def test_bad_spaces_name_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(SpaceError) as error:
        load_space(write(tmp_path, text))
    message = str(error.value)
    assert str(tmp_path / "space.yaml") in message and fragment in message and "\n" not in message


@pytest.mark.parametrize("override", ["data.colour=1", "train.epoch=2", "params.nope=1", "bogus=1", "noequals"])
def test_unknown_override_key_is_an_error(override: str) -> None:
    with pytest.raises(SpaceError, match="--set"):
        load_space(CNN, [override])


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="cannot read search space"):
        load_space(tmp_path / "absent.yaml")


@pytest.mark.parametrize("args", [
    ["--space", "search_spaces/absent.yaml"],
    ["--set", "data.colour=1"],
    ["--set", "data.name=imagenet"],
    ["--set", "train.epochs=0"],
    ["--sampler", "grid"],
    ["--trials", "many"],
    ["--set", "data.val_size=999999"],
    ["--set", "params.optimizer=adamw"],
    ["--set", "params.kernel_size=4"],
    ["--set", "params.learning_rate=fast"],
])
def test_cli_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    journal, database = tmp_path / "o.journal", tmp_path / "m.db"
    result = run_cli("study", "search", "--storage", str(journal), "--tracking-uri", f"sqlite:///{database}",
                     *args, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not journal.exists() and not database.exists()


def test_bad_storage_leaves_no_mlflow_store(tmp_path: Path) -> None:
    """The Optuna storage is checked before MLflow is touched, so nothing is created."""
    database = tmp_path / "m.db"
    result = run_cli("study", "search", "--storage", str(tmp_path / "optuna.db"),
                     "--tracking-uri", f"sqlite:///{database}", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert "--storage" in result.stderr and not database.exists()


@pytest.mark.parametrize("module", ["study", "analysis"])
def test_unreachable_tracking_server_is_one_masked_line(tmp_path: Path, module: str) -> None:
    """A refused tracking server is bad input at once, not minutes of MLflow's retries."""
    from tests.conftest import free_port

    uri = f"http://user:hunter2@127.0.0.1:{free_port()}"
    command = ["search", "--storage", str(tmp_path / "o.journal")] if module == "study" else ["report"]
    result = run_cli(module, *command, "--tracking-uri", uri, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the tracking server" in lines[0], result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "user:***@" in lines[0]


def test_data_dir_does_not_change_the_space_hash() -> None:
    """--data-dir says where the same files are, so a resume with or without it is allowed."""
    plain = load_space(CNN)
    assert load_space(CNN, ["data.data_dir=/srv/fashion"]).sha() == plain.sha()
    assert load_space(CNN, ["data.train_size=2000"]).sha() != plain.sha()
