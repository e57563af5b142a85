"""Sync twins GENERATED from agentrun_ci._async by scripts/unasync.py; do not edit."""
