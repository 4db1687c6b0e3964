"""The notifier worker: job-failed events → grouped notifications on every configured sink."""
from workers.notifier.flusher import GroupFlusher
from workers.notifier.grouping import FailureGrouper, GroupDecision, GroupSummary, fingerprint
from workers.notifier.handler import NotifierHandler, build_notifier_worker

__all__ = ["FailureGrouper", "GroupDecision", "GroupFlusher", "GroupSummary", "NotifierHandler",
           "build_notifier_worker", "fingerprint"]
