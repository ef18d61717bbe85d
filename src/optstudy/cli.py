"""The one entry point of every command: where the project is, how its config is composed, and
how an expected error ends a command (one ``error:`` line, exit code 2).

Imports neither torch nor Lightning, so that commands fail fast on bad input.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from omegaconf import DictConfig, open_dict

from optstudy import quiet, resolvers
from optstudy.errors import ConfigError, find_user_error

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

# The project folder (holding conf/train.yaml): set once here, read by conf/paths/default.yaml.
ROOT_ENV = "OPTSTUDY_ROOT"
# Set to 1 to see the traceback of an expected error instead of its one line.
DEBUG_ENV = "OPTSTUDY_DEBUG"
# Exit code of a command that stopped on an expected error.
USER_ERROR_EXIT = 2
CONFIG_NAME = "train"

T = TypeVar("T")


def project_root(default: Path | None = None) -> Path:
    """The project folder: ``$OPTSTUDY_ROOT``, else ``default`` (else the current folder), which
    then becomes ``$OPTSTUDY_ROOT`` for everything this process composes or starts."""
    root = os.environ.setdefault(ROOT_ENV, str(Path(default or Path.cwd()).resolve()))
    return Path(root)


def config_dir() -> Path:
    """The project's ``conf/`` folder; :class:`ConfigError` when it has no ``train.yaml``."""
    conf = project_root() / "conf"
    if not (conf / f"{CONFIG_NAME}.yaml").is_file():
        raise ConfigError(
            f"no conf/{CONFIG_NAME}.yaml in {conf.parent}: run from the project folder or set "
            f"{ROOT_ENV}"
        )
    return conf


def _choice_values(override: Override) -> list[str]:
    """The options an override of a config group picks (every value of a sweep)."""
    from hydra.core.override_parser.types import ValueType

    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return []  # a glob picks among the existing options
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if v is not None]  # null deselects an optional group


def check_choices(overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for the first override of a config group (any value of a
    sweep) that is not one of the group's options, naming them; call it where Hydra is
    initialized, before it composes anything or creates a folder."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    sources = loader.get_sources()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        group = override.key_or_group
        if override.is_delete() or not any(source.is_group(group) for source in sources):
            continue
        options = loader.get_group_options(group)
        values = _choice_values(override)
        for value in values:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                hint = f" (did you mean {group}={close[0]}?)" if close else ""
                where = f" (in {override.input_line})" if len(values) > 1 else ""
                raise ConfigError(
                    f"{group}={value}{where} is not an option of {group}: choose one of "
                    f"{', '.join(options)}{hint}"
                )


@contextmanager
def _hydra_initialized() -> Iterator[None]:
    """Hydra initialized with the project's ``conf/`` (and the project's resolvers)."""
    from hydra import initialize_config_dir

    resolvers.register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        yield


def check_sweeps(overrides: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for the first override that sweeps (``key=a,b``), for a
    command line without ``-m``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override():
            raise ConfigError(
                f"{override.input_line} sweeps over several values: add -m to run them all "
                "(python train.py -m ...), or give one value"
            )


def first_job(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with each sweep replaced by its first value, to compose one job of it; a
    sweep that cannot be listed (a glob of options, an interval for a search) is left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType

    job = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            job.append(override.input_line)
        elif override.is_discrete_sweep() and override.value_type != ValueType.GLOB_CHOICE_SWEEP:
            job.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
    return job


def check_command_line(argv: Sequence[str]) -> None:
    """Check a ``train.py`` command line before Hydra runs it: its config-group choices (see
    :func:`check_choices`), without ``-m`` that it sweeps nothing, and that it composes (no
    misspelled key; for a sweep, its first job). A mistake is one ``error:`` line, and no run
    or sweep folder is created."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import ConfigCompositionException

    known, rest = get_args_parser().parse_known_args(list(argv))
    overrides = [*known.overrides, *(a for a in rest if not a.startswith("-"))]
    with _hydra_initialized():
        check_choices(overrides)
    if not known.multirun:
        check_sweeps(overrides)
    job = first_job(overrides)
    try:
        compose_job(job)
    except ConfigCompositionException as exc:
        unknown = _unknown_key(job, str(exc))
        if unknown is None:
            raise
        raise unknown from exc


def _unknown_key(overrides: list[str], message: str) -> ConfigError | None:
    """For Hydra's refusal (``message``) of an override whose key the config lacks, a
    :class:`ConfigError` naming the closest existing key; None for any other refusal."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(overrides)
    bad = next(
        (o for o in parsed if message.startswith(f"Could not override '{o.key_or_group}'")), None
    )
    if bad is None:
        return None
    parent, _, name = bad.key_or_group.rpartition(".")
    cfg = compose_job([o.input_line for o in parsed if o is not bad])
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(name, keys, n=1)
    hint = f" (did you mean {'.'.join(filter(None, (parent, close[0])))}?)" if close else ""
    return ConfigError(
        f"{bad.input_line}: {bad.key_or_group} is not a key of the config{hint}; to add a new "
        f"key, write +{bad.input_line}"
    )


def compose_job(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` as ``python train.py`` does, Hydra's own
    node (``hydra.*``: launcher, sweeper, choices) included, as a launcher sees a job."""
    from hydra import compose as hydra_compose

    with _hydra_initialized():
        check_choices(overrides)
        return hydra_compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)


def compose(
    overrides: Sequence[str] = (), output_dir: Path | str | None = None
) -> tuple[DictConfig, dict[str, str | None]]:
    """The run config of :func:`compose_job` without its ``hydra`` node (``paths.output_dir``
    set to ``output_dir``), and the config-group choices Hydra made."""
    cfg = compose_job(overrides)
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(output_dir or "unused-output-dir")
    return cfg, choices


def debugging() -> bool:
    """Whether expected errors should show their traceback (``OPTSTUDY_DEBUG=1``)."""
    return bool(os.environ.get(DEBUG_ENV))


def expected_error(exc: BaseException) -> BaseException | None:
    """The user-fixable error behind ``exc``: an :class:`OptstudyError` anywhere in its chain
    of causes (libraries such as Hydra wrap it), or a Hydra composition error (an unknown
    option or key on the command line); None for anything else, which is a bug."""
    from hydra.errors import HydraException

    found = find_user_error(exc)
    if found is None and isinstance(exc, HydraException):
        return exc
    return found


def error_line(error: BaseException) -> str:
    """``error`` as the one line the user reads (without the ``error:`` prefix)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def fail(error: BaseException) -> None:
    """Print ``error`` as one ``error:`` line on stderr and exit with code 2."""
    print(f"error: {error_line(error)}", file=sys.stderr)
    raise SystemExit(USER_ERROR_EXIT)


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; an expected error (see :func:`expected_error`) ends the process with one
    ``error:`` line and exit code 2, unless ``OPTSTUDY_DEBUG`` asks for the traceback. Other
    exceptions propagate."""
    try:
        return action()
    except Exception as exc:
        error = expected_error(exc)
        if error is None or debugging():
            raise
        fail(error)
        raise  # unreachable: fail() exits


def command(action: Callable[[], object]) -> int:
    """Run a command line tool's ``action`` with the project's log format and error handling;
    return its exit code (0, or 2 after an expected error)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    quiet.install()
    try:
        guarded(action)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
