"""crewtui: a terminal dashboard that embeds a runtime for orchestrating many parallel agent sessions."""

__version__ = "0.1.0"
