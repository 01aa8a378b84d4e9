"""Which settings a command runs with: the file given, or the packaged defaults (the demo
hospital, data in ./var/carescore), then the CARESCORE_* environment overrides."""

from __future__ import annotations

import os
from pathlib import Path

from engine.config import Settings, load_settings

DEFAULT_CONFIG = Path(__file__).with_name("defaults.yaml")


def settings_from(config: str | None) -> Settings:
    # the packaged file's relative paths mean the current folder
    settings = load_settings(Path(config)) if config else load_settings(DEFAULT_CONFIG, base=Path.cwd())
    demo = os.environ.get("CARESCORE_DEMO")
    if demo is not None:
        settings.demo.enabled = demo.strip().lower() not in ("0", "false", "no", "off", "")
    for env, attr in (("CARESCORE_API_PORT", "api"), ("CARESCORE_MLLP_PORT", "mllp")):
        if os.environ.get(env):
            getattr(settings, attr).port = int(os.environ[env])
    if os.environ.get("CARESCORE_KAFKA"):
        settings.runtime.kind = "kafka"
        settings.runtime.kafka.bootstrap = os.environ["CARESCORE_KAFKA"]
    if os.environ.get("CARESCORE_DATA_DIR"):
        settings.data_dir = Path(os.environ["CARESCORE_DATA_DIR"]).resolve()
    return settings
