"""Tests of the dashboard: snapshots against a fake runtime, pilot tests of every key against a real one."""
