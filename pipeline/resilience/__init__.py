"""Resilience policies that are values built once from settings: retry (and later bulkhead)."""
