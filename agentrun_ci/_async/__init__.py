"""Async implementations; the sync twins in agentrun_ci._sync are generated from these."""
