"""A scripted fake model server (Anthropic Messages, OpenAI Responses, Gemini API) for driving real agent CLIs offline."""

from tests.fakemodel import server
from tests.fakemodel.server import *  # noqa: F403 (its public names, listed once: server.__all__)

__all__ = server.__all__
