"""The SLURM job array that ``launcher=submitit_slurm`` submits, through the real command line:
``python train.py -m ... launcher=submitit_slurm`` makes Hydra instantiate
hydra-submitit-launcher's plugin, whose own ``launch`` builds submitit's SLURM executor and
hands it the sweep. There is no cluster here: stand-ins for ``srun`` and ``sbatch`` on PATH
let submitit believe it is on one, and ``sbatch`` keeps the script it is given instead of
submitting it, then fails, which ends the sweep."""

import os
import sys
from pathlib import Path

import pytest
from conftest import run_train

SBATCH = """#!/bin/sh
# Stand-in for SLURM's sbatch: keep the job script, submit nothing.
cp "$1" "$SBATCH_RECORD"
echo "sbatch stand-in: nothing submitted" >&2
exit 1
"""


def submitted_script(tmp: Path, args: list[str]) -> str:
    """The sbatch script of ``python train.py -m launcher=submitit_slurm ARGS``."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)
    sweep = tmp / "sweep"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env["SBATCH_RECORD"] = str(tmp / "job.sh")
    args = ["-m", "launcher=submitit_slurm", f"hydra.sweep.dir={sweep}", *args]
    result = run_train(args, tmp / "unused", tmp / "cache", env=env)
    # The sweep reached sbatch (and no further: nothing was submitted).
    assert result.returncode == 1 and "sbatch stand-in: nothing submitted" in result.stderr, (
        result.stderr[-3000:]
    )
    script = (tmp / "job.sh").read_text()
    command = f"{sys.executable} -u -m submitit.core._submit {sweep}/.submitit/%j"
    assert script.rstrip().endswith(command)  # each array job runs the pickled sweep job
    return script


@pytest.fixture(scope="module")
def default_script(tmp_path_factory) -> tuple[Path, str]:
    """A sweep of 65 runs (one more than the array runs at once) with the launcher's defaults.
    Each run costs the plugin a pickle of the sweep's job: no more runs than that."""
    tmp = tmp_path_factory.mktemp("slurm_defaults")
    return tmp, submitted_script(tmp, ["seed=range(65)"])


SETTINGS = [
    ("hydra.launcher.partition=gpu", "--partition=gpu"),
    ("hydra.launcher.gpus_per_node=4", "--gpus-per-node=4"),
    ("hydra.launcher.tasks_per_node=4", "--ntasks-per-node=4"),
    ("hydra.launcher.timeout_min=30", "--time=30"),
    ("hydra.launcher.array_parallelism=8", "--array=0-8%8"),
    ("hydra.launcher.account=lab", "--account=lab"),
    ("+hydra.launcher.additional_parameters.qos=high", "--qos=high"),
]


@pytest.fixture(scope="module")
def overridden_script(tmp_path_factory) -> str:
    """A sweep of 9 runs with every setting of SETTINGS overridden at once."""
    tmp = tmp_path_factory.mktemp("slurm_settings")
    return submitted_script(tmp, ["seed=range(9)", *(o for o, _ in SETTINGS)])


def test_defaults_one_gpu_four_hours_64_jobs_at_once(default_script):
    tmp, text = default_script
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--time=240", "--array=0-64%64"):
        assert f"#SBATCH {line}\n" in text
    for line in ("--cpus-per-task=4", "--mem=32GB"):
        assert f"#SBATCH {line}\n" in text
    assert "--partition" not in text and "--account" not in text  # the cluster's defaults
    assert f"--output={tmp}/sweep/.submitit/" in text  # submitit's logs inside the sweep dir


@pytest.mark.parametrize(("override", "line"), SETTINGS, ids=[o for o, _ in SETTINGS])
def test_every_setting_is_overridable(overridden_script, override, line):
    assert f"#SBATCH {line}\n" in overridden_script


def test_every_run_of_the_sweep_is_pickled_for_the_array(default_script):
    """Before submitting, the plugin pickled one job per run (the launcher, the sweep's config
    and the task function) for the array's jobs to load."""
    tmp, _ = default_script
    assert len(list((tmp / "sweep" / ".submitit").glob("*.pkl"))) == 65
