"""The grouping launcher's settings, registered as ``hydra/launcher=grouped``."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class GroupedLauncherConf:
    """Settings of the grouping launcher (``grouped_launcher.GroupedLauncher``)."""

    _target_: str = "hydra_plugins.optstudy_grouped_launcher.grouped_launcher.GroupedLauncher"
    # How each group trains: auto (the faster mode on the device: vmap on a GPU,
    # sequential on a CPU), sequential (one member after another) or vmap (fused).
    mode: str = "auto"
    # Most members per group (None: no limit); larger groups are split.
    max_members: int | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="grouped", node=GroupedLauncherConf, provider="optstudy"
)
