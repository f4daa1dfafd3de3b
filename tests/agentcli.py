"""Find the real agent CLIs (installed by scripts/install-agents.sh) and point them at the fake model server offline.

- `claude_bin()` / `codex_bin()`: the binary's path, or `pytest.skip` saying how to install it.
- `claude_env(fake, home)`: the environment for `claude` talking only to `fake` (HOME is `home`, so no user
  config is read or written).
- `codex_env(fake, home)`: writes `home/.codex/config.toml` (provider "fake" at `fake`) and returns the
  environment (`CODEX_HOME`, `HOME`, the provider's key).
- `AgentProcess`: a subprocess speaking JSON lines (read events with a timeout, write JSON); killed (its whole
  process group) on close, so a failing test leaves nothing behind.

The binaries are looked up in `$CREWTUI_TEST_AGENTS_DIR/node_modules/.bin/` (default: `.agents/` in the repo).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakemodel.server import FakeModel

REPO = Path(__file__).resolve().parent.parent
INSTALL_HINT = "run bash scripts/install-agents.sh"
FAKE_KEY = "sk-fake-test-key"
CODEX_PROVIDER = "fake"
CODEX_KEY_VAR = "CREWTUI_FAKE_OPENAI_KEY"

# Claude Code 2.1.197 retries API errors (429, 529, 5xx) CLAUDE_CODE_MAX_RETRIES times (default 10, clamped to
# 15, 0 allowed). The delay is max(retry-after, 500 ms * 2^(attempt-1) + up to 25% jitter), so with a fake
# `retry-after: 0` the first retry waits ~0.5-0.6 s and the second ~1-1.25 s. API_TIMEOUT_MS is the per-request
# timeout (default 600000).
CLAUDE_MAX_RETRIES_VAR = "CLAUDE_CODE_MAX_RETRIES"


def agents_dir() -> Path:
    return Path(os.environ.get("CREWTUI_TEST_AGENTS_DIR") or REPO / ".agents").resolve()


def find_agent(name: str) -> Path | None:
    path = agents_dir() / "node_modules" / ".bin" / name
    return path if path.exists() and os.access(path, os.X_OK) else None


def require_agent(name: str) -> Path:
    path = find_agent(name)
    if path is None:
        pytest.skip(f"{name} not installed: {INSTALL_HINT} (looked in {agents_dir() / 'node_modules' / '.bin'})")
    return path


def claude_bin() -> Path:
    return require_agent("claude")


def codex_bin() -> Path:
    return require_agent("codex")


def _base_env(home: Path) -> dict[str, str]:
    """A minimal environment: no proxy, no user config, nothing inherited that could point elsewhere."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    return env


def claude_env(fake: FakeModel, home: Path, max_retries: int | None = None, **extra: str) -> dict[str, str]:
    """Environment for `claude` against `fake`: no telemetry, no update check, HOME=`home`."""
    home.mkdir(parents=True, exist_ok=True)
    env = _base_env(home)
    env.update(
        {
            "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
            "ANTHROPIC_API_KEY": FAKE_KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        }
    )
    if os.geteuid() == 0:
        env["IS_SANDBOX"] = "1"  # bypassPermissions refuses to run as root without it
    if max_retries is not None:
        env[CLAUDE_MAX_RETRIES_VAR] = str(max_retries)
    env.update(extra)
    return env


def codex_config(fake: FakeModel, request_max_retries: int = 0, stream_max_retries: int = 0) -> str:
    """config.toml for codex against `fake`, offline.

    `[features] plugins = false` stops the curated-plugins sync (`git ls-remote https://github.com/openai/plugins`
    on every start); analytics/feedback off; no update check. Retries: `stream_max_retries` is what codex 0.171.0
    uses for a 429/5xx on /v1/responses ("Reconnecting... n/N"); 0 fails at once.
    """
    return "\n".join(
        [
            f'model = "{fake.model}"',
            f'model_provider = "{CODEX_PROVIDER}"',
            'approval_policy = "never"',
            'sandbox_mode = "danger-full-access"',
            "check_for_update_on_startup = false",
            "",
            f"[model_providers.{CODEX_PROVIDER}]",
            'name = "fake"',
            f'base_url = "{fake.openai_base_url}"',
            f'env_key = "{CODEX_KEY_VAR}"',
            'wire_api = "responses"',
            f"request_max_retries = {request_max_retries}",
            f"stream_max_retries = {stream_max_retries}",
            "stream_idle_timeout_ms = 20000",
            "",
            "[features]",
            "plugins = false",
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[feedback]",
            "enabled = false",
            "",
        ]
    )


def codex_env(fake: FakeModel, home: Path, config: str | None = None, **extra: str) -> dict[str, str]:
    """Write `home/.codex/config.toml` and return the environment for `codex` against `fake`."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(config if config is not None else codex_config(fake))
    env = _base_env(home)
    env.update({"CODEX_HOME": str(codex_home), CODEX_KEY_VAR: FAKE_KEY})
    env.update(extra)
    return env


class AgentProcess:
    """A CLI started in its own process group, with stdout read line by line on a thread (JSON when it parses)."""

    def __init__(
        self,
        argv: Sequence[str | os.PathLike[str]],
        env: Mapping[str, str],
        cwd: Path,
        stdin_open: bool = True,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.PIPE if stdin_open else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[str] = []  # every stdout line, as read
        self.written: list[str] = []  # every line written to stdin
        self.stderr = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr += raw.decode("utf-8", "replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        line = json.dumps(message)
        self.written.append(line)
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON line (not yet consumed by an earlier wait) for which `predicate` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(self._explain(f"no matching event within {timeout}s"))
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # stay at EOF for later waits
                raise AssertionError(self._explain("stdout closed before a matching event"))
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and predicate(value):
                return value

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(self._explain(f"did not exit within {timeout}s")) from None
        self._reader.join(5)
        self._err_reader.join(5)
        return code

    def _explain(self, what: str) -> str:
        tail = "\n".join(self.lines[-20:])
        return f"{self.argv[0]}: {what}\n--- stdout (last 20 lines)\n{tail}\n--- stderr\n{self.stderr[-2000:]}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.close_stdin()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_agent(
    argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str], cwd: Path, timeout: float = 60.0
) -> AgentProcess:
    """Run a CLI with stdin at /dev/null to its end; the finished AgentProcess holds its lines and exit code."""
    agent = AgentProcess(argv, env, cwd, stdin_open=False)
    try:
        agent.wait_exit(timeout)
    except BaseException:
        agent.kill()
        raise
    return agent
