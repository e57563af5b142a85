"""Public names live in `agentrun_ci` (as httpx's do), and each shared constant or helper
has one home."""

from __future__ import annotations

import traceback
from typing import get_args

import agentrun_ci
from agentrun_ci import DEFAULT_CWD, STRATEGY_NAMES, NotFoundError, StrategyName, strip_ansi


def test_public_classes_and_functions_say_they_live_in_agentrun_ci() -> None:
    for name in agentrun_ci.__all__:
        value = getattr(agentrun_ci, name)
        if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
            assert value.__module__ == "agentrun_ci", name
    error = NotFoundError("no such sandbox", status_code=404)
    assert traceback.format_exception_only(error)[0].startswith("agentrun_ci.NotFoundError: ")
    assert repr(agentrun_ci.CodeInterpreter) == "<class 'agentrun_ci.CodeInterpreter'>"


def test_the_strategy_names_are_the_literal_type_and_include_dedicated() -> None:
    assert get_args(StrategyName) == STRATEGY_NAMES
    assert "dedicated" in STRATEGY_NAMES


def test_the_default_working_directory_is_the_services_home() -> None:
    assert DEFAULT_CWD == "/home/user"


def test_strip_ansi_removes_colour_and_osc_sequences() -> None:
    coloured = "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"
    assert strip_ansi(coloured) == "ZeroDivisionError: division by zero"
    titled = "\x1b]0;title\x07a\x1b]8;;https://x.test\x1b\\link\x1b]8;;\x1b\\ b"
    assert strip_ansi(titled) == "alink b"
    assert strip_ansi("\x1b[?25lplain\x1b[2K") == "plain"
