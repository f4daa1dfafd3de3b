"""Agent programs that ship with crewtui (the demo agent)."""
