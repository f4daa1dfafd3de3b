"""Fault tests: real runtimes, real processes and real SQLite files, broken on purpose."""
