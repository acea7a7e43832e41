"""The catalog: models, deployments and policies loaded from ``config/*.yaml``."""

from app.catalog.loader import ConfigError, load_catalog, log_disabled
from app.catalog.model import Catalog, Deployment, Model, Policy

__all__ = [
    "Catalog",
    "ConfigError",
    "Deployment",
    "Model",
    "Policy",
    "load_catalog",
    "log_disabled",
]
