"""Compatibility import for the migration guide's preview SDK name.

The E2B→AgentRun migration guide imports `from agentrun_code_interpreter import
CodeInterpreter`, a preview package that was never published. This alias makes
that code run as written; new code should import from `agentrun_ci`.
"""

from agentrun_ci import AsyncCodeInterpreter, CodeInterpreter, NetworkMode

__all__ = ["AsyncCodeInterpreter", "CodeInterpreter", "NetworkMode"]
