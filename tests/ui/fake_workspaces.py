"""The fake runtime's workspaces: sessions that ran in a git worktree of their own, with what their branches changed
and where their merges stand, and the fixed diffs `FakeRuntime.diff` answers (as `git diff` printed them, from a
real repository: tabs in a Makefile, a binary file, new files, a line longer than 80 columns).

code-review-pr-102 is the one to review: seven files, two commits, not merged yet. pr-101's merge is in conflict,
pr-103 still works in its worktree, pr-105's branch was discarded, pr-106 changed nothing; of the ops sessions one
is merged, one waits in the merge queue for the user's checkout, one failed its merge check.

With `FakeRuntime(best_of=True)`, a best-of group too (`make_best_of`): fix-login-1..3, one task tried three times.
The first failed its merge check, the second is done and unmerged (seven files), the third still runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crewtui.model import Session, SessionState, TokenCounts

DIFF_REVIEW = '''\
diff --git a/Makefile b/Makefile
index 120cb3f..fe399d6 100644
--- a/Makefile
+++ b/Makefile
@@ -5,7 +5,10 @@ SRC = src
 test:
 \t$(PY) -m pytest -q tests
\x20
-lint:
-\truff check src
+lint: fmt
+\truff check src tests
\x20
-.PHONY: test lint
+fmt:
+\truff format src tests
+
+.PHONY: test lint fmt
diff --git a/docs/auth.md b/docs/auth.md
index b65b4eb..0eb7c48 100644
--- a/docs/auth.md
+++ b/docs/auth.md
@@ -9,7 +9,9 @@ Tokens are signed with the key in `AUTH_SECRET`.
\x20
 ## Expiry
\x20
-Tokens never expire.
+Tokens expire after `AUTH_TTL` seconds (default 3600). An expired token is refused
+with 401 and `WWW-Authenticate: Bearer error="invalid_token"`, so a client knows to
+call `POST /refresh` [with the old token] rather than ask its user to log in again.
\x20
 ## Revocation
\x20
diff --git a/src/api/auth.py b/src/api/auth.py
index a3c7b0e..427b12c 100644
--- a/src/api/auth.py
+++ b/src/api/auth.py
@@ -1,9 +1,11 @@
 """Bearer tokens: issue, check, refresh."""
\x20
 import hmac
+import time
 from hashlib import sha256
\x20
-from .config import SECRET
+from .config import SECRET, TTL
+from .errors import Unauthorized
\x20
\x20
 def _sign(payload: str) -> str:
@@ -11,15 +13,23 @@ def _sign(payload: str) -> str:
\x20
\x20
 def issue(user_id: str) -> str:
-    return f"{user_id}.{_sign(user_id)}"
+    payload = f"{user_id}.{int(time.time())}"
+    return f"{payload}.{_sign(payload)}"
\x20
\x20
 def check(token: str) -> str:
-    """The user id in a valid token, or None."""
+    """The user id in a valid token; raises Unauthorized for a bad or expired one."""
     try:
-        user_id, sig = token.rsplit(".", 1)
+        user_id, issued, sig = token.rsplit(".", 2)
     except ValueError:
-        return None
-    if not hmac.compare_digest(sig, _sign(user_id)):
-        return None
+        raise Unauthorized("malformed token") from None
+    if not hmac.compare_digest(sig, _sign(f"{user_id}.{issued}")):
+        raise Unauthorized("bad signature")
+    if time.time() - int(issued) > TTL:
+        raise Unauthorized("expired", headers={"WWW-Authenticate": 'Bearer error="invalid_token", error_description="the token expired"'})
     return user_id
+
+
+def refresh(token: str) -> str:
+    """A new token for the user of a valid one (an expired one is refused: log in again)."""
+    return issue(check(token))
diff --git a/src/api/errors.py b/src/api/errors.py
new file mode 100644
index 0000000..6251eed
--- /dev/null
+++ b/src/api/errors.py
@@ -0,0 +1,9 @@
+"""Errors the API answers with a status of their own."""
+
+
+class Unauthorized(Exception):
+    status = 401
+
+    def __init__(self, reason: str, headers: dict[str, str] | None = None) -> None:
+        super().__init__(reason)
+        self.headers = headers or {}
diff --git a/src/api/handlers_102.py b/src/api/handlers_102.py
index 3b3486c..964fdbf 100644
--- a/src/api/handlers_102.py
+++ b/src/api/handlers_102.py
@@ -1,8 +1,10 @@
 from .auth import check
+from .errors import Unauthorized
\x20
\x20
 def profile(request):
-    user_id = check(request.headers["Authorization"].removeprefix("Bearer "))
-    if user_id is None:
-        return 401, {"error": "unauthorized"}
+    try:
+        user_id = check(request.headers["Authorization"].removeprefix("Bearer "))
+    except Unauthorized as exc:
+        return exc.status, {"error": str(exc)}, exc.headers
     return 200, {"user": user_id}
diff --git a/static/logo.png b/static/logo.png
index 324c50d..81e3484 100644
Binary files a/static/logo.png and b/static/logo.png differ
diff --git a/tests/api/test_auth.py b/tests/api/test_auth.py
new file mode 100644
index 0000000..791246c
--- /dev/null
+++ b/tests/api/test_auth.py
@@ -0,0 +1,17 @@
+import pytest
+
+from api.auth import check, issue, refresh
+from api.errors import Unauthorized
+
+
+def test_a_fresh_token_names_its_user():
+    assert check(issue("u1")) == "u1"
+
+
+def test_an_expired_token_is_refused(monkeypatch):
+    token = issue("u1")
+    monkeypatch.setattr("time.time", lambda: 10**10)
+    with pytest.raises(Unauthorized, match="expired"):
+        check(token)
+    with pytest.raises(Unauthorized):
+        refresh(token)
'''

DIFF_CONFLICT = '''\
diff --git a/src/api/auth.py b/src/api/auth.py
index a3c7b0e..57fe1ae 100644
--- a/src/api/auth.py
+++ b/src/api/auth.py
@@ -15,10 +15,10 @@ def issue(user_id: str) -> str:
\x20
\x20
 def check(token: str) -> str:
-    """The user id in a valid token, or None."""
+    """The user id in a valid token, or None (a malformed one too)."""
     try:
-        user_id, sig = token.rsplit(".", 1)
-    except ValueError:
+        user_id, sig = token.strip().rsplit(".", 1)
+    except (ValueError, AttributeError):
         return None
     if not hmac.compare_digest(sig, _sign(user_id)):
         return None
diff --git a/src/api/handlers_102.py b/src/api/handlers_102.py
index 3b3486c..3c46e9e 100644
--- a/src/api/handlers_102.py
+++ b/src/api/handlers_102.py
@@ -4,5 +4,5 @@ from .auth import check
 def profile(request):
     user_id = check(request.headers["Authorization"].removeprefix("Bearer "))
     if user_id is None:
-        return 401, {"error": "unauthorized"}
+        return 401, {"error": "unauthorized", "hint": "log in again"}
     return 200, {"user": user_id}
'''

DIFF_SMALL = """\
diff --git a/Makefile b/Makefile
index 120cb3f..5d4e105 100644
--- a/Makefile
+++ b/Makefile
@@ -3,7 +3,7 @@ SRC = src
\x20
\x20
 test:
-\t$(PY) -m pytest -q tests
+\t$(PY) -m pytest -q tests -x
\x20
 lint:
 \truff check src
"""


REVIEW = "code-review-pr-102"  # the one with a multi-file diff, not merged
CONFLICT = "code-review-pr-101"
LIVE = "code-review-pr-103"
MERGED = "ops-backup-nightly"
CONFLICT_NOTE = "conflict in src/api/auth.py: CONFLICT (content): Merge conflict in src/api/auth.py"
WAITING_NOTE = "main is checked out in /home/u/ops: merging would leave its files behind"
CHECK_NOTE = (
    "check exited 1: tests/test_web.py::test_home FAILED\n"
    "E       assert 502 == 200\n"
    "FAILED tests/test_web.py::test_home - assert 502 == 200\n"
    "1 failed, 41 passed in 2.31s"
)

BEST_OF = "fix-login"  # the group of tries
TRIES = [f"{BEST_OF}-{n}" for n in (1, 2, 3)]
BEST_OF_TASK = "fix the login redirect after a token refresh"
TRY_CHECK_NOTE = (
    "check exited 1: tests/api/test_auth.py::test_refresh FAILED\n"
    "E       AssertionError: 401 != 200\n"
    "1 failed, 57 passed in 3.02s"
)

# label -> (repository, merge state, merge note, its diff, commits); a live session's changes are counted when it ends
WORKSPACES: dict[str, tuple[str, str, str | None, str, int]] = {
    CONFLICT: ("/home/u/api", "conflict", CONFLICT_NOTE, DIFF_CONFLICT, 1),
    REVIEW: ("/home/u/api", "none", None, DIFF_REVIEW, 2),
    LIVE: ("/home/u/api", "none", None, DIFF_SMALL, 1),
    "code-review-pr-105": ("/home/u/api", "discarded", None, DIFF_SMALL, 1),
    "code-review-pr-106": ("/home/u/api", "none", None, "", 0),
    MERGED: ("/home/u/ops", "merged", None, DIFF_SMALL, 1),
    "ops-rotate-keys": ("/home/u/ops", "queued", WAITING_NOTE, DIFF_SMALL, 1),
    "ops-deploy-web": ("/home/u/ops", "check_failed", CHECK_NOTE, DIFF_SMALL, 1),
    TRIES[0]: ("/home/u/api", "check_failed", TRY_CHECK_NOTE, DIFF_CONFLICT, 1),
    TRIES[1]: ("/home/u/api", "none", None, DIFF_REVIEW, 2),
    TRIES[2]: ("/home/u/api", "none", None, DIFF_SMALL, 1),
}
# Sessions whose agent has a workspace: a spawn of it gets a worktree (and may be best of N).
WORKSPACE_AGENTS = ("sub",)
WORKSPACE_REPO = "/home/u/api"


def count(diff: str, commits: int) -> dict[str, Any]:
    """What `git diff --numstat` says of a diff (its own count, not the dashboard's): per file, and the totals."""
    files: list[dict[str, Any]] = []
    for line in diff.splitlines():
        if line.startswith("diff --git a/"):
            files.append({"path": line.split(" b/", 1)[1], "insertions": 0, "deletions": 0})
        elif line.startswith("Binary files"):
            files[-1].update(insertions=-1, deletions=-1)
        elif line.startswith(("+++", "---")):
            continue
        elif line.startswith("+"):
            files[-1]["insertions"] += 1
        elif line.startswith("-"):
            files[-1]["deletions"] += 1
    return {
        "files": files,
        "insertions": sum(max(0, f["insertions"]) for f in files),
        "deletions": sum(max(0, f["deletions"]) for f in files),
        "commits": commits,
    }


def make_workspaces(sessions: dict[str, Session]) -> None:
    """Give the WORKSPACES their worktrees, branches, counts and merge states (in place)."""
    for s in sessions.values():
        spec = WORKSPACES.get(s.label)
        if spec is None:
            continue
        repo, merge, note, diff, commits = spec
        s.repo, s.base, s.branch = repo, "main", f"crew/{s.label}"
        s.worktree = f"/tmp/crew/worktrees/{s.key}"
        s.base_commit = hashlib.sha1(s.label.encode()).hexdigest()
        s.merge, s.merge_note = merge, note  # type: ignore[assignment]
        s.changes = None if s.state.live else count(diff, commits)
        s.merge_queued_at = s.updated_at if merge == "queued" else None


def diff_of(label: str) -> str:
    return WORKSPACES[label][3]


def make_best_of(now: float) -> list[Session]:
    """The tries of BEST_OF (before `make_workspaces` gives them their branches): started 25 minutes ago; the first
    ran 11 minutes, the second 14, the third still runs. Their keys sort after the fake's 50 sessions."""
    out = []
    for n, (label, state, took, tokens, cost) in enumerate(
        (
            (TRIES[0], SessionState.DONE, 662.0, (8_200, 1_450, 30_100, 1_700), 0.1206),
            (TRIES[1], SessionState.DONE, 871.0, (9_100, 1_240, 31_000, 1_900), 0.1402),
            (TRIES[2], SessionState.RUNNING, None, (4_400, 610, 15_200, 800), 0.0617),
        ),
        start=1,
    ):
        created = now - 25 * 60
        i, o, cr, cw = tokens
        out.append(
            Session(
                key=f"s-01jqfake{900 + n:018d}",
                label=label,
                state=state,
                agent="sub",
                task=BEST_OF_TASK,
                preset="claude-code",
                created_at=created,
                started_at=created + 2,
                ended_at=None if took is None else created + 2 + took,
                updated_at=created + 2 + (took or 0),
                exit_code=None if took is None else 0,
                last_line="editing src/api/auth.py" if took is None else "done: the redirect keeps the next URL",
                last_output_at=created + 2 + (took or 1200),
                shim_pid=49001 if took is None else None,
                agent_pid=49002 if took is None else None,
                tokens=TokenCounts(input=i, output=o, cache_read=cr, cache_write=cw),
                cost_usd=cost,
                best_of=BEST_OF,
            )
        )
    return out
