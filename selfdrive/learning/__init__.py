"""What the journal teaches: track records (stats and recommendations build on them)."""

from selfdrive.learning.records import track_record

__all__ = ["track_record"]
