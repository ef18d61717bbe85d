"""The package's Optuna sweeper (``hparams_search=lr_optuna``): its search space, samplers and
ask → launch → tell loop on their own, then real searches through ``train.py -m``."""

import re
import subprocess
import sys

import optuna
import pytest
from conftest import ROOT, read_metrics, run_train
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from optstudy.errors import ConfigError
from optstudy.sweep import DIVERGED_OBJECTIVE, OUTCOMES_DIR
from optstudy.tuning import (
    RUN_DIR_ATTR,
    SAMPLERS,
    Search,
    SearchSpace,
    make_sampler,
)

WITH_HELPERS = {"PYTHONPATH": str(ROOT / "tests")}
PARSER = OverridesParser.create()
LR_RANGE = {"low": 1e-4, "high": 1.0, "log": True}
# One epoch of an MLP on the 8×8 digits (20 steps): a trial takes seconds.
SEARCH = ["-m", "hparams_search=lr_optuna", "data=digits", "model=mlp", "optimizer=sgd"]
SEARCH += ["trainer.max_epochs=1"]
THREE_TRIALS = "hydra.sweeper.n_trials=3"
# The optimizer's own search space, as conf/optimizer/*.yaml holds it (optimizer.search_space).
SGD_SPACE = "++optimizer.search_space.lr={low:0.01,high:0.5,log:true}"


def parsed(*overrides):
    return PARSER.parse_overrides(list(overrides))


def test_search_space_from_params_then_the_command_line():
    space = SearchSpace()
    space.add("optimizer.lr", LR_RANGE, PARSER)
    space.add("optimizer.momentum", "interval(0.0, 0.9)", PARSER)
    space.add("optimizer.weight_decay", "tag(log, interval(1e-6, 1e-2))", PARSER)
    space.add("optimizer.nesterov", "choice(true, false)", PARSER)
    space.add("seed", 3, PARSER)
    # The command line fixes the momentum and adds a searched eps.
    for override in parsed("optimizer.momentum=0.5", "optimizer.eps=choice(1e-8,1e-6)"):
        space.add_override(override)
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(1e-4, 1.0, log=True),
        "optimizer.weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "optimizer.nesterov": CategoricalDistribution(["True", "False"]),
        "optimizer.eps": CategoricalDistribution(["1e-08", "1e-06"]),
    }
    assert space.overrides({"optimizer.lr": 0.01, "optimizer.eps": "1e-06"}) == [
        "seed=3", "optimizer.momentum=0.5", "optimizer.lr=0.01", "optimizer.eps=1e-06"
    ]  # fmt: skip


def test_default_ranges_fill_what_the_command_line_leaves_open():
    space = SearchSpace()
    for override in parsed("optimizer.lr=0.1", "optimizer.eps=interval(1e-9, 1e-7)"):
        space.add_override(override)
    ranges = {"lr": LR_RANGE, "eps": LR_RANGE, "weight_decay": {"low": 0.0, "high": 0.1}}
    space.add_defaults(ranges, "optimizer.", "optimizer.search_space")
    assert space.distributions == {
        "optimizer.eps": FloatDistribution(1e-9, 1e-7),
        "optimizer.weight_decay": FloatDistribution(0.0, 0.1),
    }
    assert space.fixed == {"optimizer.lr": "optimizer.lr=0.1"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"low": 1.0, "high": 0.1}, "`low <= high` must hold"),
        ({"low": 0.0, "high": 1.0, "log": True}, "`low > 0` must hold for `log=True`"),
        ({"low": 0.1}, "must be {low: …, high: …, log: true|false}"),
        ({"low": 0.1, "high": 1.0, "step": 0.1}, "must be {low: …, high: …, log: true|false}"),
        ({"low": 0.1, "high": 1.0, "log": "yes"}, "must be {low: …, high: …, log: true|false}"),
        ("tag(log, interval(0, 1))", "`low > 0` must hold for `log=True`"),
    ],
)
def test_a_bad_range_names_its_setting(value, message):
    with pytest.raises(ConfigError, match=r"^optimizer\.lr=.* is invalid: ") as raised:
        SearchSpace().add("optimizer.lr", value, PARSER)
    assert message in str(raised.value)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_is_seeded(name):
    def suggestions(seed):
        study = optuna.create_study(sampler=make_sampler(name, seed), direction="maximize")
        values = []
        for _ in range(6):
            trial = study.ask({"lr": FloatDistribution(1e-4, 1.0, log=True)})
            values.append(trial.params["lr"])
            study.tell(trial, values[-1])
        return values

    first = suggestions(3)
    assert suggestions(3) == first and suggestions(4) != first
    assert len(set(first)) == 6 and all(1e-4 <= v <= 1.0 for v in first)


def test_an_unknown_sampler_is_a_config_error():
    with pytest.raises(
        ConfigError,
        match=r"^hydra\.sweeper\.sampler=cmaes is invalid: must be one of tpe, random, qmc$",
    ):
        make_sampler("cmaes", 0)


class Jobs:
    """Stands in for the launcher: records each batch and returns, for trial n, ``value(n)``
    and a run directory; raises KeyboardInterrupt in batch ``stop_in`` (a search stopped while
    its jobs run)."""

    def __init__(self, value, stop_in=None):
        self.value = value
        self.stop_in = stop_in
        self.batches = []

    def __call__(self, overrides, first_number):
        self.batches.append((first_number, overrides))
        if len(self.batches) == self.stop_in:
            raise KeyboardInterrupt
        numbers = range(first_number, first_number + len(overrides))
        return [(self.value(n), f"runs/{n}") for n in numbers]


def search(storage, jobs, seed=0):
    lr = FloatDistribution(1e-4, 1.0, log=True)
    space = SearchSpace({"optimizer.lr": lr}, {"seed": "seed=0"})
    return Search("s", storage, make_sampler("tpe", seed), "maximize", space, jobs)


def test_batches_are_numbered_by_their_trials_and_a_failed_job_fails_its_trial_only(tmp_path):
    """A job that returns nothing (failed) makes its trial FAIL; one that diverged returns
    DIVERGED_OBJECTIVE and is COMPLETE; the search goes on to n_trials."""
    storage = f"sqlite:///{tmp_path}/o.db"
    jobs = Jobs(lambda n: {1: DIVERGED_OBJECTIVE, 4: None}.get(n, n / 10))
    found = search(storage, jobs)
    found.run(n_trials=7, n_jobs=3)
    assert [(first, len(o)) for first, o in jobs.batches] == [(0, 3), (3, 3), (6, 1)]
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [(t.number, t.state, t.value) for t in trials] == [
        (0, TrialState.COMPLETE, 0.0),
        (1, TrialState.COMPLETE, DIVERGED_OBJECTIVE),
        (2, TrialState.COMPLETE, 0.2),
        (3, TrialState.COMPLETE, 0.3),
        (4, TrialState.FAIL, None),
        (5, TrialState.COMPLETE, 0.5),
        (6, TrialState.COMPLETE, 0.6),
    ]
    assert [t.user_attrs[RUN_DIR_ATTR] for t in trials] == [f"runs/{n}" for n in range(7)]
    launched = [o for _, batch in jobs.batches for o in batch]
    assert launched == [["seed=0", f"optimizer.lr={t.params['optimizer.lr']}"] for t in trials]
    assert found.summary() == {
        "name": "optuna", "study_name": "s", "direction": "maximize",
        "trials": {"COMPLETE": 6, "FAIL": 1}, "best_trial": 6, "best_value": 0.6,
        "best_params": trials[6].params,
    }  # fmt: skip


def test_a_stopped_search_runs_its_unfinished_trials_again_then_goes_on(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    stopped = Jobs(lambda n: n / 10, stop_in=2)
    with pytest.raises(KeyboardInterrupt):
        search(storage, stopped).run(n_trials=7, n_jobs=3)
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING] * 3

    again = Jobs(lambda n: n / 10)
    search(storage, again, seed=1).run(n_trials=7, n_jobs=3)
    # Trials 3-5 again, with the overrides they had, as one batch; then trial 6; 0-2 never.
    assert again.batches[0] == stopped.batches[1]
    assert [(first, len(o)) for first, o in again.batches] == [(3, 3), (6, 1)]
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [(t.number, t.state, t.value) for t in trials] == [
        (n, TrialState.COMPLETE, n / 10) for n in range(7)
    ]


def test_a_finished_study_runs_nothing_more(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    search(storage, Jobs(lambda n: 0.5)).run(n_trials=2, n_jobs=1)
    jobs = Jobs(lambda n: 0.5)
    search(storage, jobs).run(n_trials=2, n_jobs=1)
    assert jobs.batches == []


def test_a_study_of_the_other_direction_or_a_bad_storage_is_a_config_error(tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    optuna.create_study(study_name="s", storage=storage, direction="minimize")
    with pytest.raises(ConfigError, match=r"direction=maximize is invalid: .* a minimize study$"):
        search(storage, Jobs(lambda n: 0.5))
    bad = "sqlite:////no/such/dir/o.db"
    with pytest.raises(ConfigError, match=re.escape(f"storage={bad} cannot be opened: ")):
        search(bad, Jobs(lambda n: 0.5))


@pytest.mark.parametrize("quiet", [False, True])
def test_alembic_sets_up_its_plugins_without_a_log_line(quiet):
    """Optuna's schema migrations import alembic.command, which logs each alembic plugin at
    INFO as it is set up ("setup plugin alembic.autogenerate.schemas", ...) unless quieted."""
    code = "import logging; logging.basicConfig(level=logging.INFO)\n"
    code += "from optstudy.tuning import quiet_libraries; quiet_libraries()\n" if quiet else ""
    code += "import alembic.command"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ("setup plugin alembic" in result.stderr) is not quiet


def trial_lines(output):
    return re.findall(r"trial \d+ (?:COMPLETE|FAIL): .*", output)


def study_trials(storage):
    return optuna.load_study(study_name="lr_search", storage=storage).trials


def test_a_killed_search_resumes_with_the_same_command(tmp_path, cache_dir):
    """Trial 1 of 2 is stopped by SIGTERM in its 6th step; the same command again finishes
    trial 1 in its run directory; trial 0 is not trained again. The lr comes from the
    optimizer's search_space."""
    storage = f"sqlite:///{tmp_path}/o.db"
    sweep_dir = tmp_path / "sweep"
    kill = ["+callbacks.kill._target_=helpers.sigterm_at.SigtermAt", "+callbacks.kill.step=5"]
    args = [*SEARCH, SGD_SPACE, f"hydra.sweeper.storage={storage}", *kill, "+callbacks.kill.job=1"]
    args += ["hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}"]
    first = run_train(args, tmp_path / "r", cache_dir, env=WITH_HELPERS)
    assert first.returncode == 143, first.stderr[-3000:]
    assert [t.state for t in study_trials(storage)] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert (sweep_dir / "1-sgd-constant-s0" / "checkpoints" / "interrupted.ckpt").is_file()
    trial_0 = sweep_dir / "0-sgd-constant-s0" / "metrics.json"
    written = trial_0.stat().st_mtime_ns

    again = run_train(args, tmp_path / "r", cache_dir, env=WITH_HELPERS)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert "trials 1 were left running by a stopped search" in output
    assert "resuming from" in (sweep_dir / "1-sgd-constant-s0" / "train.log").read_text()
    assert trial_0.stat().st_mtime_ns == written
    trials = study_trials(storage)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    runs = [read_metrics(sweep_dir / t.user_attrs[RUN_DIR_ATTR]) for t in trials]
    assert [t.user_attrs[RUN_DIR_ATTR] for t in trials] == [
        str(sweep_dir / f"{n}-sgd-constant-s0") for n in range(2)
    ]
    assert [t.value for t in trials] == [m["best_val_acc"] for m in runs]
    assert [t.params["optimizer.lr"] for t in trials] == [m["lr"] for m in runs]
    assert all(0.01 <= m["lr"] <= 0.5 and m["steps"] == 20 for m in runs)
    # Optuna's log: one line per trial told, none from alembic.
    assert len(trial_lines(output)) == 1 and "alembic" not in output


def test_diverged_trials_count_and_a_failed_one_does_not_stop_the_search(tmp_path, cache_dir):
    """lr 1e6 diverges every trial (objective 0.0, COMPLETE); trial 1 crashes (FAIL); the
    search still runs trial 2. The command-line interval searches the momentum."""
    storage = f"sqlite:///{tmp_path}/o.db"
    boom = ["+callbacks.boom._target_=helpers.sigterm_at.FailAt", "+callbacks.boom.step=1"]
    args = [*SEARCH, THREE_TRIALS, "optimizer.lr=1e6", "optimizer.momentum=interval(0.0, 0.5)"]
    args += boom
    args += ["+callbacks.boom.job=1", f"hydra.sweeper.storage={storage}"]
    result = run_train([*args, f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path / "r", cache_dir,
                       env=WITH_HELPERS)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = study_trials(storage)
    assert [(t.state, t.value) for t in trials] == [
        (TrialState.COMPLETE, 0.0),
        (TrialState.FAIL, None),
        (TrialState.COMPLETE, 0.0),
    ]
    assert all(0.0 <= t.params["optimizer.momentum"] <= 0.5 for t in trials)
    assert "FailAt: planned crash at step 1" in result.stderr
    statuses = [read_metrics(tmp_path / "sweep" / f"{n}-sgd-constant-s0")["status"] for n in (0, 2)]
    assert statuses == ["diverged", "diverged"]
    assert not (tmp_path / "sweep" / "1-sgd-constant-s0" / "metrics.json").exists()


def test_a_batch_of_trials_trains_as_one_group(tmp_path, cache_dir):
    args = [*SEARCH, THREE_TRIALS, SGD_SPACE, "launcher=grouped", "hydra.sweeper.n_jobs=3"]
    result = run_train([*args, f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path / "r", cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [read_metrics(tmp_path / "sweep" / f"{n}-sgd-constant-s0") for n in range(3)]
    assert [(m["group"]["size"], m["group"]["member"]) for m in runs] == [(3, 0), (3, 1), (3, 2)]
    assert len({m["group"]["id"] for m in runs}) == 1 and len({m["lr"] for m in runs}) == 3
    assert len(trial_lines(result.stdout + result.stderr)) == 3


def test_a_bad_search_space_is_one_error_line(tmp_path, cache_dir):
    args = [*SEARCH, "++optimizer.search_space.lr={low:1.0,high:0.1,log:true}"]
    result = run_train([*args, f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path / "r", cache_dir)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "error: optimizer.search_space.lr={'low': 1.0, 'high': 0.1, 'log': True} is invalid: "
        "`low <= high` must hold, but got (low=1.0, high=0.1)."
    )
    # The run-dir check made it, the sweep check its (empty) outcomes folder; nothing more.
    made = [p for p in (tmp_path / "sweep").iterdir() if p.name != OUTCOMES_DIR]
    assert made == [] and not any((tmp_path / "sweep" / OUTCOMES_DIR).iterdir())
