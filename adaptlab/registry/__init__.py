"""Versioned artifacts: SQLite index + content-addressed folders, aliases with rollback, API keys,
request log and feedback (see :mod:`adaptlab.registry.store`)."""

from adaptlab.registry.index import RegistryError, check_name, registry_root
from adaptlab.registry.store import DEFAULT_ALIAS, Entry, Registry, lineage_text, parse_ref

__all__ = [
    "DEFAULT_ALIAS",
    "Entry",
    "Registry",
    "RegistryError",
    "check_name",
    "lineage_text",
    "parse_ref",
    "registry_root",
]
