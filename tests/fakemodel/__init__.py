"""A scripted fake model server (Anthropic Messages + OpenAI Responses) for driving real agent CLIs offline."""

from tests.fakemodel.server import (
    ErrorReply,
    FakeModel,
    RecordedRequest,
    Served,
    TextReply,
    ToolUseReply,
    Usage,
    error,
    run_command,
    slow,
    text,
    tool_use,
)

__all__ = [
    "ErrorReply",
    "FakeModel",
    "RecordedRequest",
    "Served",
    "TextReply",
    "ToolUseReply",
    "Usage",
    "error",
    "run_command",
    "slow",
    "text",
    "tool_use",
]
