"""drbackup configuration: one schema (``schema.py``), loading and validation (``load.py``).

Generated reference: ``docs/configuration.md`` (``python -m drbackup.config.docs``).
"""

from drbackup.config.load import format_validation_error, load_config
from drbackup.config.schema import (
    Config,
    MinioTarget,
    PostgresTarget,
    RepositorySettings,
    Target,
    redacted_dict,
)

__all__ = [
    "Config",
    "MinioTarget",
    "PostgresTarget",
    "RepositorySettings",
    "Target",
    "format_validation_error",
    "load_config",
    "redacted_dict",
]
