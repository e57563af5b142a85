"""agentrun-ci: run AI-generated code on Alibaba Cloud AgentRun, or on a local emulator."""

from ._version import __version__

__all__ = ["__version__"]
