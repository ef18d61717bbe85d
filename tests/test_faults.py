"""Faults a long study meets, reproduced for real: a damaged cache file, a disk that fills up,
two runs in one run directory, a lock left by a killed run, SIGKILL during a checkpoint write.
(A refused rerun that changes nothing: test_robustness.py.)"""

import builtins
import csv
import errno
import fcntl
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from contextlib import suppress

import pytest
import torch
from conftest import ROOT, read_metrics, run_train, snapshot, train_command
from formats import labelled_images, write_idx
from helpers.faults import faulty_open, no_space, sigkill

from optstudy import cli
from optstudy.artifacts import CONFIG_FILE, LOCK_FILE
from optstudy.atomic import atomic_write_json, leftover_temp_files
from optstudy.checkpoint_io import AtomicCheckpointIO
from optstudy.data.cache import DIGEST_KEY, cache_file, load_prepared, prepare
from optstudy.data.digits import DigitsSource
from optstudy.data.mnist import FILES, IdxSource
from optstudy.errors import RunDirInUse
from optstudy.joblog import JobLogFile
from optstudy.rundir import owned

TESTS = ROOT / "tests"
WITH_HELPERS = {"PYTHONPATH": str(TESTS)}
# scikit-learn's digits: 20 training steps an epoch.
TINY = ["data=digits", "model=mlp", "trainer.max_epochs=3"]
FULL_DISK = "No space left on device; free some space, then run the same command again"


def _no_temp_files(directory):
    return not list(directory.rglob(".*.tmp"))


def _complete_table(path):
    """Whether the CSV file ``path`` ends with a complete row, each as long as its header."""
    text = path.read_text()
    rows = list(csv.reader(text.splitlines()))
    return text.endswith("\n") and all(len(row) == len(rows[0]) for row in rows)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _alter(path):
    """Change one pixel of a sound cache file and save it again with its old sha256."""
    record = torch.load(path, weights_only=True)
    record["train_images"][0, 0, 0, 0] ^= 1
    torch.save(record, path)


DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "garbage": lambda path: path.write_bytes(bytes(range(256)) * 64),
    "altered": _alter,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_file_is_reported_in_one_line_and_rebuilt(tmp_path, caplog, damage):
    source = DigitsSource()
    path = prepare(source, tmp_path)
    sound = torch.load(path, weights_only=True)
    DAMAGE[damage](path)
    with caplog.at_level(logging.WARNING):
        assert prepare(source, tmp_path) == path
    (warning,) = caplog.records
    reason = "its content does not match its recorded sha256" if damage == "altered" else ""
    assert warning.getMessage().startswith(f"cache file {path} is damaged ({reason}")
    assert warning.getMessage().endswith("; removed it, decoding digits again")
    rebuilt = torch.load(path, weights_only=True)
    assert rebuilt[DIGEST_KEY] == sound[DIGEST_KEY]
    assert all(torch.equal(rebuilt[k], sound[k]) for k in ("train_images", "test_labels"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.slow  # the command in a subprocess; the test above rebuilds in-process
def test_the_prepare_command_rebuilds_a_truncated_cache(tmp_path, caplog):
    """A cache cut short (a full disk, an interrupted copy, a partial dvc pull), then the
    command as a user runs it: one warning line and a sound file, which the next use takes."""
    cache = tmp_path / "cache"
    path = prepare(DigitsSource(), cache)
    path.write_bytes(path.read_bytes()[:1000])
    cmd = [sys.executable, "-m", "optstudy.data.prepare", "data=digits", f"paths.cache_dir={cache}"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("[WARNING]")]
    assert len(warnings) == 1 and f"cache file {path} is damaged (" in warnings[0]
    assert "Traceback" not in result.stderr
    assert f"{path}\n1438 training and 359 test images" in result.stdout
    with caplog.at_level(logging.INFO):
        assert prepare(DigitsSource(), cache) == path
    assert not caplog.records  # sound: neither a warning nor decoding again
    assert len(load_prepared(path).train_labels) == 1438


def _fork(action, report):
    """Start ``action`` in a forked child process (its result, or its traceback, into the
    file ``report``); the child's pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        torch.set_num_threads(1)  # the parent's OpenMP threads are not in the child
        try:
            report.write_text(str(action()))
            code = 0
        except BaseException:
            report.write_text(traceback.format_exc())
        finally:
            os._exit(code)
    return pid


def _in_child(action, report, timeout_s=60):
    """Run ``action`` in a forked child process (see :func:`_fork`); its wait status."""
    pid, deadline = _fork(action, report), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child process hung: {report.read_text() if report.exists() else ''}")


def test_a_damaged_cache_without_its_raw_data_ends_in_one_error_line(tmp_path, capsys):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    for split, n in (("train", 30), ("t10k", 10)):
        images, labels = labelled_images(n, size=8)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)

    def source():
        return IdxSource("tiny", [str(c) for c in range(10)], root=str(raw), download=False)

    path = prepare(source(), cache)
    path.write_bytes(path.read_bytes()[:1000])
    for stem in FILES.values():
        (raw / stem).unlink()
    assert cli.command(lambda: prepare(source(), cache)) == 2
    error = capsys.readouterr().err  # the raw data is gone from the data.root it names
    assert error.count("\n") == 1
    assert error.startswith(f"error: data.root={raw} lacks train-images-idx3-ubyte")


def _save_checkpoint(path, step):
    AtomicCheckpointIO().save_checkpoint({"global_step": step, "weights": torch.ones(4096)}, path)


# The files a killed or failed write must never tear: how to write one, how to read it back.
WRITERS = {
    "checkpoint": (
        _save_checkpoint,
        lambda path: torch.load(path, weights_only=True)["global_step"],
    ),
    "metrics.json": (
        lambda path, epochs: atomic_write_json(path, {"epochs": epochs, "pad": "x" * 4096}),
        lambda path: json.loads(path.read_text())["epochs"],
    ),
}


def _install_open(monkeypatch, open_):
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


@pytest.mark.parametrize("name", WRITERS)
def test_a_write_on_a_full_disk_is_one_error_line_and_keeps_the_old_file(
    tmp_path, monkeypatch, capsys, name
):
    write, read = WRITERS[name]
    path = tmp_path / "run" / name
    write(path, 1)
    _install_open(monkeypatch, faulty_open(path.parent, no_space))
    assert cli.command(lambda: write(path, 2)) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err == f"error: cannot write {path}: {FULL_DISK}\n"
    assert read(path) == 1 and not leftover_temp_files(path.parent)


def test_a_cache_write_on_a_full_disk_is_one_error_line(tmp_path, monkeypatch, capsys):
    source, cache = DigitsSource(), tmp_path / "cache"
    _install_open(monkeypatch, faulty_open(tmp_path, no_space))
    assert cli.command(lambda: prepare(source, cache)) == 2
    monkeypatch.undo()
    path = cache_file(source, cache)
    assert capsys.readouterr().err == f"error: cannot write {path}: {FULL_DISK}\n"
    assert not list(cache.iterdir())


@pytest.mark.parametrize("name", WRITERS)
def test_a_write_killed_halfway_is_never_taken_for_a_complete_file(tmp_path, monkeypatch, name):
    """SIGKILL in the middle of a write, in a child process: the file under its name is the
    old complete one; the torn write is a temporary file (which the next attempt removes)."""
    write, read = WRITERS[name]
    path = tmp_path / "run" / name
    write(path, 1)

    def killed_write():
        _install_open(monkeypatch, faulty_open(path.parent, sigkill))
        write(path, 2)

    status = _in_child(killed_write, tmp_path / "report")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert read(path) == 1
    (torn,) = leftover_temp_files(path.parent)
    assert torn.name.startswith(f".{name}.") and torn.stat().st_size > 0


def test_a_cache_write_killed_halfway_is_never_taken_for_a_cache_file(
    tmp_path, monkeypatch, caplog
):
    source, cache = DigitsSource(), tmp_path / "cache"

    def killed_write():
        _install_open(monkeypatch, faulty_open(cache, sigkill))
        prepare(source, cache)

    status = _in_child(killed_write, tmp_path / "report")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    path = cache_file(source, cache)
    assert not path.exists() and len(leftover_temp_files(cache)) == 1
    with caplog.at_level(logging.WARNING):
        assert len(load_prepared(prepare(source, cache)).train_labels) == 1438
    assert not caplog.records  # built anew, no damaged file met


MEET = """
import sys
from pathlib import Path
from helpers.faults import MeetingSource
from optstudy.data.cache import load_prepared, prepare

cache, meeting = map(Path, sys.argv[1:])
source = MeetingSource(str(meeting), 2, name="noise", channels=3, image_size=[32, 32],
                       num_classes=10, train_size=20000, test_size=1000)
print(load_prepared(prepare(source, cache)).train_images.sum().item())
"""


@pytest.mark.slow  # two Python processes importing torch; nothing in-process can race them
def test_two_processes_building_one_cache_both_end_with_a_sound_file(tmp_path):
    """Two processes decode the same data into an empty cache and write it at the same moment
    (they meet before writing), as the first jobs of a joblib or submitit sweep do."""
    cache, meeting = tmp_path / "cache", tmp_path / "meeting"
    meeting.mkdir()
    env = {**os.environ, **WITH_HELPERS}
    cmd = [sys.executable, "-c", MEET, str(cache), str(meeting)]
    builders = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [builder.communicate(timeout=300) for builder in builders]
    assert [b.returncode for b in builders] == [0, 0], [err[-2000:] for _, err in outputs]
    assert outputs[0][0] == outputs[1][0] and int(outputs[0][0]) > 0  # the same images
    assert len(list(meeting.iterdir())) == 2  # both decoded before either wrote
    (path,) = cache.iterdir()  # one file, no temporary file left over
    assert int(outputs[0][0]) == load_prepared(path).train_images.sum().item()


def test_a_log_line_on_a_full_disk_stops_the_job_log_quietly(capsys):
    """/dev/full takes no byte, as a full disk: Python's file handler prints a traceback for
    each line it cannot write, the job log's stops writing instead."""
    records = [logging.LogRecord("optstudy", logging.INFO, __file__, 1, "x" * 100, None, None)]
    plain = logging.FileHandler("/dev/full")
    plain.handle(records[0])
    assert "--- Logging error ---" in capsys.readouterr().err  # the fault is real
    handler = JobLogFile("/dev/full")
    for record in records * 3:
        handler.handle(record)
    assert handler.stopped and capsys.readouterr().err == ""
    handler.close()
    with suppress(OSError):  # its unwritten line again
        plain.close()


@pytest.fixture
def disk(tmp_path):
    """A folder to run in, and whether the run must fake its full disk: a small file system of
    its own (a tmpfs, mounted when this process may: it can then really be filled), else an
    ordinary folder in which the run injects ENOSPC into its own writes."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                capture_output=True,
            ).returncode
            == 0
        )
    except OSError:  # no mount command
        mounted = False
    try:
        yield folder, not mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow  # two runs of train.py (a minute); the fast tests above fault each write
def test_a_full_disk_ends_the_run_in_one_line_and_it_resumes_once_space_is_back(
    tmp_path, cache_dir, disk
):
    folder, inject = disk
    run_dir, ballast = folder / "run", folder / "ballast"
    fill = [
        "+callbacks.fill._target_=helpers.faults.FillDisk",
        "+callbacks.fill.step=30",  # in the middle of the second epoch
        f"+callbacks.fill.ballast={ballast}",
        f"+callbacks.fill.marker={tmp_path / 'filled'}",
        f"+callbacks.fill.inject={inject}",
    ]
    first = run_train([*TINY, *fill], run_dir, cache_dir, env=WITH_HELPERS)
    assert first.returncode == 2, first.stderr[-3000:]
    last_line = first.stderr.strip().splitlines()[-1]
    written = re.escape(str(run_dir))
    assert re.fullmatch(f"error: cannot write {written}/.+: {FULL_DISK}", last_line), last_line
    assert "Traceback" not in first.stderr and "Logging error" not in first.stderr
    # Nothing torn under a final name: the files of the first epoch, complete.
    assert _no_temp_files(run_dir) and not (run_dir / LOCK_FILE).exists()
    assert not (run_dir / "metrics.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        torch.load(checkpoint, weights_only=True)
    for table in ("history.csv", "diagnostics.csv", "csv/metrics.csv"):
        assert _complete_table(run_dir / table), table
    assert [row["epoch"] for row in _rows(run_dir / "history.csv")] == ["0"]

    ballast.unlink(missing_ok=True)  # space is back (an injected fault ends with its process)
    second = run_train([*TINY, *fill], run_dir, cache_dir, env=WITH_HELPERS)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in second.stdout
    metrics = read_metrics(run_dir)
    assert (metrics["status"], metrics["epochs"], metrics["steps"]) == ("completed", 3, 60)
    assert [row["epoch"] for row in _rows(run_dir / "history.csv")] == ["0", "1", "2"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow  # two runs of train.py; the fast tests above kill each write halfway
def test_sigkill_while_writing_a_checkpoint_then_the_same_command_resumes(tmp_path, cache_dir):
    """The kill leaves a torn temporary file and the lock of a dead process behind: the next
    attempt takes the lock over, ignores and removes the torn file, and resumes from the last
    complete checkpoint."""
    run_dir = tmp_path / "run"
    kill = [
        "+callbacks.kill._target_=helpers.faults.KillWhileSaving",
        "+callbacks.kill.step=40",  # the end of the second epoch
        f"+callbacks.kill.marker={tmp_path / 'killed'}",
    ]
    first = run_train([*TINY, *kill], run_dir, cache_dir, env=WITH_HELPERS)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    (torn,) = checkpoints.glob(".*.tmp")
    assert torn.name.startswith((".best.ckpt.", ".last.ckpt."))
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 20
    holder = int((run_dir / LOCK_FILE).read_text().split()[1])
    with pytest.raises(ProcessLookupError):
        os.kill(holder, 0)  # the lock names a process that is gone

    second = run_train([*TINY, *kill], run_dir, cache_dir, env=WITH_HELPERS)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {checkpoints / 'last.ckpt'}" in second.stdout
    assert read_metrics(run_dir)["epochs"] == 3 and read_metrics(run_dir)["steps"] == 60
    assert _no_temp_files(run_dir) and not (run_dir / LOCK_FILE).exists()


def _in_use(run_dir, pid):
    return (
        f"error: {run_dir} is in use by another run (pid {pid} on {socket.gethostname()}); "
        "wait for it to end or use another run directory"
    )


@pytest.mark.slow  # three runs of train.py; the fast lock tests below hold it in-process
def test_two_runs_started_in_one_directory_at_once(tmp_path, cache_dir):
    """Adam and SGD started together in one run directory: one trains (and holds at the start
    of training until released), the other stops at once naming it; a third, started while
    the first trains, changes no byte of the directory."""
    run_dir, release = tmp_path / "run", tmp_path / "release"
    env = {**os.environ, **WITH_HELPERS}

    def start(optimizer):
        hold = [
            "+callbacks.hold._target_=helpers.faults.HoldUntil",
            f"+callbacks.hold.release={release}",
            f"+callbacks.hold.holding={tmp_path / optimizer}",
        ]
        cmd = train_command([*TINY, f"optimizer={optimizer}", *hold], run_dir, cache_dir)
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    runs = {optimizer: start(optimizer) for optimizer in ("adam", "sgd")}
    deadline = time.monotonic() + 600

    def settled():  # one run holds the directory, the other has stopped
        holding = any((tmp_path / optimizer).exists() for optimizer in runs)
        return holding and any(run.poll() is not None for run in runs.values())

    while not settled():
        assert time.monotonic() < deadline and all(r.poll() in (None, 2) for r in runs.values())
        time.sleep(0.2)
    winner = next(o for o in runs if (tmp_path / o).exists())
    loser = runs.pop(next(o for o in runs if o != winner))
    _, err = loser.communicate()
    assert loser.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == _in_use(run_dir, runs[winner].pid)

    before = snapshot(run_dir)
    third = run_train([*TINY, "optimizer=momentum"], run_dir, cache_dir)
    assert third.returncode == 2 and third.stderr.strip().splitlines()[-1] == _in_use(
        run_dir, runs[winner].pid
    )
    assert snapshot(run_dir) == before

    release.touch()
    _, err = runs[winner].communicate(timeout=600)
    assert runs[winner].returncode == 0, err[-3000:]
    assert read_metrics(run_dir)["optimizer"] == winner
    assert f"optimizer={winner}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert (run_dir / CONFIG_FILE).is_file() and not (run_dir / LOCK_FILE).exists()
    validations = [row for row in _rows(run_dir / "csv" / "metrics.csv") if row["val_loss"]]
    assert len(validations) == 3  # one run's three epochs, not another run's too


HOLD = """
import sys, time
from optstudy.rundir import owned

with owned(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_held_lock_refuses_and_a_killed_holders_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunDirInUse, match=rf"\(pid {holder.pid} on "), owned(tmp_path):
            pass
    finally:
        holder.kill()  # SIGKILL: no chance to remove its lock file
        holder.wait()
    lock = tmp_path / LOCK_FILE
    assert lock.read_text().startswith(f"pid {holder.pid} ")  # stale
    with owned(tmp_path):
        assert lock.read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    assert not lock.exists()


def test_on_a_file_system_without_locks_the_run_goes_on_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING), owned(tmp_path):
        pass
    (warning,) = caplog.records
    assert warning.getMessage() == (
        f"cannot lock {tmp_path / LOCK_FILE} (No locks available): runs in it are not kept apart"
    )
    assert not list(tmp_path.iterdir())
