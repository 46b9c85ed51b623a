"""A run's statuses, in the order a run goes through them (the ledger's, the metrics')."""

STATUSES = (
    "queued",
    "preparing",
    "scoring",
    "merging",
    "publishing",
    "published",
    "merged",
    "blocked",  # merged, held by its checks before publish (`claidex publish RUN --accept`)
    "failed",
)
