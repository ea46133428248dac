"""Discovery of runbooks (folders, entry points), validation and lookup."""

from selfdrive.registry.load import ENTRY_POINT_GROUP, LoadProblem, Registry, load_registry

__all__ = ["ENTRY_POINT_GROUP", "LoadProblem", "Registry", "load_registry"]
