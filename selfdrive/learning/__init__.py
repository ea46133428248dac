"""What the journal teaches: track records, stats, rankings, recommendations, reports.

Learning only reads the journal. Policy reads :func:`track_record`; the trigger layer
orders an alert's runbooks with :func:`rank_matches`; the CLI prints
:func:`runbook_stats` (``stats``), :func:`recommend` (``learn``) and the reports of
:mod:`selfdrive.learning.report` (``report``, which imports Jinja2 when it renders).
"""

from selfdrive.learning.queries import since_of, wilson_lower_bound
from selfdrive.learning.rank import AlertRecord, alert_records, rank_matches
from selfdrive.learning.recommend import Recommendation, Thresholds, recommend
from selfdrive.learning.records import track_record
from selfdrive.learning.stats import RunbookStats, runbook_stats

__all__ = ["AlertRecord", "Recommendation", "RunbookStats", "Thresholds", "alert_records",
           "rank_matches", "recommend", "runbook_stats", "since_of", "track_record",
           "wilson_lower_bound"]
