"""The dashboard: a Textual app that renders the runtime's events and sends its commands.

It talks to the runtime only through `crewtui.api.RuntimeAPI` (in-process or over the socket);
nothing below `crewtui/ui` imports Textual.
"""
