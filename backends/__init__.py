"""Shared-state backends for sipstate: one module per strategy, looked up by name."""
from backends.base import (BACKENDS, ConfigError, MissingDependency, Store, StoreError, StoreFull,
                           StoreUnavailable, create, parse_opts, resolve)

__all__ = ["BACKENDS", "ConfigError", "MissingDependency", "Store", "StoreError", "StoreFull",
           "StoreUnavailable", "create", "parse_opts", "resolve"]
