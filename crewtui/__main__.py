"""`python -m crewtui` is the `crewtui` command (agents use it to reach `crewtui ctl` without PATH)."""

from crewtui.cli import main

main()
