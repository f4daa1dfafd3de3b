"""The runtime: orchestrator, drivers, domains, limits and clock. It never imports the UI."""
