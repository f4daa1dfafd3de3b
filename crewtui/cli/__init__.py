"""The `crewtui` command (`crewtui.cli:main`): the dashboard, `run`, `demo`, `serve` and `ctl ...`.

root.py has the top-level group and the commands that host a runtime or a dashboard, ctl.py and cron.py the
verbs that talk to a running one over its socket, printers.py how their results print, common.py what they
share. Every user error ends as one line on stderr and exit code 2; no traceback reaches a user.
"""

import sys

try:
    from crewtui.cli.root import main
except KeyboardInterrupt:  # Ctrl-C while the command still loads (~0.3 s): the same line as later, no traceback
    sys.stderr.write("crewtui: interrupted\n")
    raise SystemExit(130) from None

__all__ = ["main"]
