"""Workspaces: a git worktree per session, what it changed, and the one writer that merges (crewtui/workspaces)."""
