"""Train one classifier: ``python train.py optimizer=adagrad`` (Hydra composes conf/train.yaml)."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("OPTSTUDY_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Run one job of a run or sweep; expected errors end it with one line and exit code 2."""
    from hydra.core.hydra_config import HydraConfig

    from optstudy.errors import find_user_error
    from optstudy.validation import validate

    hydra_cfg = HydraConfig.get()
    try:
        validate(cfg)  # before the heavy training imports, so bad input fails fast
        from optstudy.run import train

        train(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.runtime.choices)
    except Exception as exc:
        error = find_user_error(exc)
        if error is None or os.environ.get("OPTSTUDY_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
