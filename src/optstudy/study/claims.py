"""Verdicts on the write-ups' claims (SEEDS.md), from the runs a report collects.

Each claim is a file ``conf/claims/<name>.yaml``: its ``text``, ``source`` (the SEEDS.md
section), the ``study`` designed to test it and the ``command`` that runs it, ``requires``
(which runs count: their ``phase`` and ``where`` values) and a ``rule``: one of
:data:`~optstudy.study.claim_rules.RULES` by ``name``, with its parameters. A verdict is one of
:data:`~optstudy.study.claim_rules.VERDICTS`; "not tested" comes with the command that would
test it, "inconclusive" with what would settle it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from optstudy.artifacts import COMPLETED
from optstudy.errors import ConfigError
from optstudy.study.claim_rules import NOT_TESTED, RULES, NotTested, Verdict, where_runs
from optstudy.study.collect import Study

CLAIMS_DIR = Path("conf") / "claims"  # relative to the project folder


@dataclass(frozen=True)
class Claim:
    """One ``conf/claims/<name>.yaml``."""

    name: str
    text: str
    source: str
    study: str
    command: str
    rule: str
    params: Mapping[str, Any] = field(default_factory=dict)
    phase: str | None = None  # the runs' study.phase; None: a plain sweep's runs
    where: Mapping[str, Any] = field(default_factory=dict)


def load_claims(folder: Path) -> list[Claim]:
    """Every claim file of ``folder``, sorted by name; :class:`ConfigError` names a file that
    lacks a key, names an unknown rule or lacks one of its parameters."""
    claims = []
    for path in sorted(Path(folder).glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        missing = [k for k in ("text", "source", "study", "command", "rule") if k not in spec]
        if missing:
            raise ConfigError(f"{path}: missing {', '.join(missing)}")
        params = dict(spec["rule"])
        name = params.pop("name", None)
        if name not in RULES:
            raise ConfigError(f"{path}: rule.name={name} is not one of {', '.join(RULES)}")
        if absent := [p for p in RULES[name][1] if p not in params]:
            raise ConfigError(f"{path}: rule {name} needs rule.{', rule.'.join(absent)}")
        requires = spec.get("requires") or {}
        claims.append(
            Claim(
                path.stem,
                spec["text"],
                spec["source"],
                spec["study"],
                spec["command"],
                name,
                params,
                requires.get("phase"),
                dict(requires.get("where") or {}),
            )
        )
    return claims


def evaluate(claim: Claim, runs: pd.DataFrame, study: Study) -> Verdict:
    """The verdict on ``claim`` from the completed ``runs`` (prepared) of its phase and
    ``where`` values; "not tested" with its command when they lack what the rule needs."""
    phase = runs["phase"].isna() if claim.phase is None else runs["phase"] == claim.phase
    chosen = where_runs(runs[phase & (runs["status"] == COMPLETED)], claim.where)
    try:
        if chosen.empty:
            wanted = ", ".join(f"{k}={v}" for k, v in claim.where.items())
            raise NotTested(
                f"no completed run of phase {claim.phase or '(a plain sweep)'}"
                + (f" with {wanted}" if wanted else "")
            )
        return RULES[claim.rule][0](chosen, study, claim.params)
    except NotTested as exc:
        return Verdict(NOT_TESTED, f"Not tested: {exc}.", claim.command)


def claims_table(claims: Sequence[Claim], verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per claim: its text, source, study, verdict, the numbers behind it and the next
    step (what would settle it, or the command that would test it)."""
    return pd.DataFrame(
        {
            "claim": [c.text for c in claims],
            "source": [c.source for c in claims],
            "study": [c.study for c in claims],
            "verdict": [v.verdict for v in verdicts],
            "evidence": [v.detail for v in verdicts],
            "next step": [v.next_step for v in verdicts],
        }
    )


def claims_json(claims: Sequence[Claim], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The verdicts as summary.json carries them, keyed by claim file name."""
    return {
        c.name: {
            "text": c.text,
            "source": c.source,
            "study": c.study,
            "rule": c.rule,
            "verdict": v.verdict,
            "detail": v.detail,
            "next_step": v.next_step,
            "numbers": [dict(row) for row in v.numbers],
        }
        for c, v in zip(claims, verdicts, strict=True)
    }
