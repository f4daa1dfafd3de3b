"""A scripted fake model server (Anthropic Messages, OpenAI Responses, Gemini API) for driving real agent CLIs offline."""

from tests.fakemodel.server import (
    ANTHROPIC,
    GEMINI,
    RESPONSES,
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
    "ANTHROPIC",
    "GEMINI",
    "RESPONSES",
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
