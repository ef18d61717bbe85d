"""Decide whether a W&B run goes online or offline, before wandb is asked to start one."""

from __future__ import annotations

import os
from typing import NamedTuple


class WandbMode(NamedTuple):
    """A ``wandb.init`` mode and why it was chosen (for the one line the user sees)."""

    mode: str
    reason: str


def credentials_problem() -> str | None:
    """None when wandb finds credentials for its server without asking (the ``WANDB_API_KEY``
    environment variable, a ``.netrc`` entry, an identity token file or its settings file);
    otherwise what is wrong, for the user's one line."""
    import wandb
    from wandb.sdk.lib import wbauth

    try:
        auth = wbauth.authenticate_session(
            host=wandb.setup().settings.base_url,
            source="optstudy",
            prompt=False,
            update_session=False,
        )
    except wandb.errors.AuthenticationError as exc:  # e.g. a malformed key
        return f"API key not usable: {exc}"
    return None if auth else "no API key"


def choose_mode(offline: bool) -> WandbMode:
    """Offline when ``offline`` (``logger.wandb.offline``) is true, else what ``WANDB_MODE``
    says when it says anything but online; online only with usable credentials, so that no
    run ever waits at a login prompt."""
    if offline:
        return WandbMode("offline", "logger.wandb.offline=true")
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode and env_mode != "online":
        return WandbMode(env_mode, f"WANDB_MODE={env_mode}")
    if problem := credentials_problem():
        return WandbMode("offline", problem)
    return WandbMode("online", "API key configured")
