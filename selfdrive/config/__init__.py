"""The team's selfdrive.toml as a typed model."""

from selfdrive.config.load import CONFIG_NAME, find_config, load_config, parse_config
from selfdrive.config.model import (
    ExecutorConfig,
    PolicyConfig,
    Rule,
    TeamConfig,
    TrackRecordRule,
)

__all__ = ["CONFIG_NAME", "ExecutorConfig", "PolicyConfig", "Rule", "TeamConfig",
           "TrackRecordRule", "find_config", "load_config", "parse_config"]
