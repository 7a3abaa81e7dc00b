"""The dashboard's reads: what happened to each flow in a window, what needs attention now.

Everything comes from the summary tables (flow instances and their hourly counts, missing
runs, dead letters and the per-minute sender counts), through their indexes: a window's
whole hours from the hourly counts, its edges from instances of a definition by start
time (definition_id, started_at), problems by status and age (status, last_activity_at).
Every function takes `now`, so a test can look at the dashboard of any moment.
"""

from tracing.flows.dashboard.attention import (
    Shortlist,
    Stuck,
    flows_in_trouble,
    flows_stuck,
    missing_open,
)
from tracing.flows.dashboard.definitions import (
    Compliance,
    DefinitionSummary,
    FunnelStep,
    LastRun,
    definitions_summary,
    flows_exist,
)
from tracing.flows.dashboard.ingest import (
    DEAD_LETTER_OPEN,
    DEAD_LETTER_STATE_WORDS,
    DeadLetterDepth,
    SenderRate,
    dead_letter_depth,
    sender_rates,
)
from tracing.flows.dashboard.windows import (
    DEFAULT_WINDOW,
    STATUS_WORDS,
    STATUSES,
    WINDOW_KEYS,
    Window,
    dashboard_window,
)

__all__ = [
    "DEAD_LETTER_OPEN", "DEAD_LETTER_STATE_WORDS", "DEFAULT_WINDOW", "STATUSES", "STATUS_WORDS",
    "WINDOW_KEYS", "Compliance", "DeadLetterDepth", "DefinitionSummary", "FunnelStep", "LastRun",
    "SenderRate", "Shortlist", "Stuck", "Window", "dashboard_window", "dead_letter_depth",
    "definitions_summary", "flows_exist", "flows_in_trouble", "flows_stuck", "missing_open",
    "sender_rates",
]  # fmt: skip
