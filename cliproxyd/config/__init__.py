"""config.yaml: frozen models and the loader that validates them."""

from cliproxyd.config.load import ConfigError, load_config, load_yaml, parse_config
from cliproxyd.config.model import Config

__all__ = ["Config", "ConfigError", "load_config", "load_yaml", "parse_config"]
