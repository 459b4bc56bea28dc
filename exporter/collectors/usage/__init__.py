"""The usage counters: spend, tokens and requests, summed from LiteLLM's daily tables."""

from .collector import Clock, UsageCollector, utc_now

__all__ = ["Clock", "UsageCollector", "utc_now"]
