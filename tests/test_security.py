"""Security: no shell anywhere between a task and its agent, steer text only ever reaches stdin, output dirs
cannot leave the data dir, and the socket, store and data dir belong to their owner alone."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from crewtui.control.client import RemoteRuntime
from crewtui.errors import BadInput, ConfigError, NotFound
from crewtui.locations import DataDir, socket_connect_path
from crewtui.model import SessionState, SpawnRequest
from tests.conftest import ECHO_AGENT, PY, crew_from
from tests.faults.helpers import ENV, Headless, call, run_as_nobody, wait_until

# An agent that reports exactly the argv it received, and nothing else.
SHOW_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"


def hostile(canary: Path) -> list[str]:
    """Texts a shell would act on; each must arrive as data, and `canary` must never be created."""
    c = str(canary)
    return [
        f"$(touch {c})",
        f"`touch {c}`",
        f"; touch {c}",
        f"x && touch {c} || touch {c}",
        f"| touch {c} > {c} < /dev/null &",
        f"'$(touch {c})' \"`touch {c}`\" \\ \\\\",
        f"line one\ntouch {c}\nline three",
        f"*?[a-z] ~root {{a,b}} $HOME ${{IFS}}touch${{IFS}}{c} %s %n",
        "--help",
        "-c",
        "=x",
        "",
        "é ✓ \u202e right-to-left \x1b[2J \t tabs",
    ]


async def test_the_task_reaches_the_agent_verbatim_as_one_argv_element(make_orch, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    agent = json.dumps([PY, "-c", SHOW_ARGV, "--task", "{task}", "--label", "{label}"])
    orch = await make_orch(crew_from(f"[crew]\nname = 'sec'\n[agents.show]\ncommand = {agent}\n"))
    with pytest.raises(BadInput, match="NUL"):
        await orch.spawn(SpawnRequest(label="nul", agent="show", task="a\0b"))
    for i, task in enumerate(hostile(canary)):
        s = await orch.spawn(SpawnRequest(label=f"task-{i}", agent="show", task=task))
        done = await orch.wait_ended(s.key, timeout=20)
        assert done.state == SessionState.DONE, (task, done.reason)
        assert done.result == ["--task", task, "--label", f"task-{i}"], task
        # A raw argv is passed as is too, every element in its own slot.
        raw = await orch.spawn(SpawnRequest(label=f"argv-{i}", argv=[PY, "-c", SHOW_ARGV, task, task]))
        assert (await orch.wait_ended(raw.key, timeout=20)).result == [task, task]
    assert not canary.exists()


def test_ctl_and_crew_agents_pass_the_task_through_the_cli_and_socket_unchanged(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    crew = tmp_path / "crew.toml"
    crew.write_text(f"[crew]\nname = 'sec'\n[agents.show]\ncommand = {json.dumps([PY, '-c', SHOW_ARGV, '{task}'])}\n")
    d = tmp_path / "data"
    h = Headless(d, crew)
    try:
        tasks = [t for t in hostile(canary) if t and not t.startswith("-")]
        keys = []
        for i, task in enumerate(tasks):
            p = subprocess.run(
                [
                    PY,
                    "-m",
                    "crewtui",
                    "ctl",
                    "--data-dir",
                    str(d),
                    "spawn",
                    "--label",
                    f"cli-{i}",
                    "--agent",
                    "show",
                    "--task",
                    task,
                    "--json",
                ],
                capture_output=True,
                text=True,
                env=ENV,
                timeout=60,
            )
            assert p.returncode == 0, p.stderr
            keys.append(json.loads(p.stdout)["key"])
        for key, task in zip(keys, tasks):
            out = d / "sessions" / key / "stdout.log"
            deadline_ok = _wait_file_line(out)
            assert deadline_ok and json.loads(out.read_text().splitlines()[0]) == [task], (task, out.read_text())
        assert not canary.exists()
    finally:
        h.stop()


def _wait_file_line(path: Path, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return True
        time.sleep(0.02)
    return False


def _cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def test_steer_text_only_ever_arrives_on_stdin(make_orch, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    orch = await make_orch()
    s = await orch.spawn(SpawnRequest(label="steered", argv=[PY, "-c", ECHO_AGENT]))
    argv_before = _cmdline(s.agent_pid)  # type: ignore[arg-type]
    sent = [t for t in hostile(canary) if t and "\n" not in t and "\0" not in t]
    for text in sent:
        await orch.send(s.key, text)
    # Text that would add a line (a forged second message) or a NUL is refused whole, nothing is written.
    for bad in (f"ok\ntouch {canary}", "ok\r\nmore", "nul\0byte", "x" * (64 * 1024 + 1)):
        with pytest.raises(BadInput) as info:
            await orch.send(s.key, bad)
        assert "\n" not in str(info.value)
    await orch.send(s.key, "quit")
    done = await orch.wait_ended(s.key, timeout=20)
    assert done.result == {"steered": sent}
    assert argv_before == [PY.encode(), b"-c", ECHO_AGENT.encode(), b""]
    assert not canary.exists()


# ------------------------------------------------------------------------------------------ paths


ESCAPES = [
    "../x",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "..",
    ".",
    ".hidden",
    "x/../../y",
    "a\\b",
    "a\0b",
    "~root",
    "A",
    "x" * 129,
    "",
]


@pytest.mark.parametrize("label", ESCAPES)
async def test_labels_that_could_be_paths_are_refused(orch, label: str) -> None:
    with pytest.raises(BadInput, match="invalid label"):
        await orch.spawn(SpawnRequest(label=label, argv=["true"]))
    assert orch.sessions == {}
    assert list(orch.data_dir.sessions_root.iterdir()) == []


async def test_output_dirs_are_generated_keys_inside_the_data_dir(orch) -> None:
    s = await orch.spawn(SpawnRequest(label="plain", argv=["true"]))
    d = Path(s.output_dir)  # type: ignore[arg-type]
    assert d.parent == orch.data_dir.sessions_root and d.name == s.key
    assert s.key.startswith("s-") and s.key[2:].isalnum() and s.key.islower()
    # A client cannot choose the key (or anything not in the request model) ...
    with pytest.raises(ValueError, match="key"):
        SpawnRequest.model_validate({"label": "k", "argv": ["true"], "key": "../../escape"})
    # ... and references that look like paths are just unknown names.
    for ref in ("../../etc/passwd", "/etc/passwd", ".."):
        with pytest.raises(NotFound):
            await orch.history(ref)


def test_cron_items_cannot_smuggle_paths_into_labels() -> None:
    text = textwrap.dedent(
        """
        [agents.w]
        command = ["true"]
        [[cron]]
        name = "j"
        schedule = { kind = "every", every = "1h" }
        spawn = { agent = "w", label = "job-{item}", items = ["ok", "../../etc"] }
        """
    )
    with pytest.raises(ConfigError, match=r"cron\[0\]\.spawn\.label: .*renders to 'job-\.\./\.\./etc'"):
        crew_from(text)


# ------------------------------------------------------------------------------------------ permissions


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_socket_store_lock_and_dirs_are_owner_only(tmp_path: Path) -> None:
    d = tmp_path / "fresh" / "data"
    h = Headless(d)
    try:
        s = call(h.dd.socket, "spawn", label="perm", argv=[PY, "-c", ECHO_AGENT])["result"]
        dd = DataDir(d)
        assert mode(d) == 0o700 and mode(dd.sessions_root) == 0o700
        assert mode(Path(socket_connect_path(dd.socket))) == 0o600
        assert mode(dd.store) == 0o600 and mode(dd.lock) == 0o600
        for side in ("-wal", "-shm"):  # SQLite gives its side files the database file's mode
            p = dd.store.with_name(dd.store.name + side)
            if p.exists():
                assert mode(p) & 0o077 == 0, (p, oct(mode(p)))
        sd = dd.session_dir(s["key"])
        assert mode(sd) == 0o700 and mode(sd / "stdin.fifo") == 0o600
    finally:
        call(h.dd.socket, "kill", ref="perm")
        h.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.parametrize("open_dir", [False, True], ids=["private-dir", "world-readable-dir"])
def test_another_user_cannot_use_the_control_socket(tmp_path: Path, open_dir: bool) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="crewtui-sec-"))
    base.chmod(0o755)
    d = base / "data"
    h = Headless(d)
    try:
        if open_dir:
            d.chmod(0o755)  # even when the dir can be entered, the socket's own mode (0600) keeps others out
        sock = Path(socket_connect_path(DataDir(d).socket))

        def raw_connect() -> int:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(sock))
            except PermissionError:
                print("refused")
                return 0
            s.sendall(b'{"op": "list"}\n')
            print("connected:", s.recv(100))
            return 1

        code, out = run_as_nobody(raw_connect)
        assert (code, out.strip()) == (0, "refused")

        def via_client() -> int:
            import asyncio

            try:
                asyncio.run(RemoteRuntime(DataDir(d).socket, d).list())
            except Exception as exc:
                print(f"{type(exc).__name__}: {exc}")
                return 0
            return 1

        code, out = run_as_nobody(via_client)
        assert code == 0 and out.strip().startswith("RuntimeUnavailable: "), out
        assert "\n" not in out.strip()
        assert h.ping()
    finally:
        h.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the socket's short twin


def _deep_data_dir(base: Path) -> Path:
    """A data dir whose control.sock path is too long for a Unix socket: the socket must get a short twin."""
    d = base / ("d" * 60) / ("e" * 60)
    assert len(str(DataDir(d).socket)) > 108
    return d


def _twin_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in ENV.items() if k != "XDG_RUNTIME_DIR"}
    env["TMPDIR"] = str(tmpdir)
    return env


def _start_fails(d: Path, env: dict[str, str]) -> str:
    p = subprocess.run(
        [PY, "-m", "crewtui", "run", "--headless", "--data-dir", str(d)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    return p.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory as another user")
@pytest.mark.parametrize("taken", ["other-owner", "open-mode", "symlink"])
def test_a_socket_twin_dir_made_first_by_someone_else_is_refused_never_used(tmp_path: Path, taken: str) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    twin = tmpdir / f"crewtui-{os.getuid()}"
    if taken == "other-owner":
        twin.mkdir(mode=0o777)
        os.chown(twin, 65534, 65534)  # another user got there first
        why = "belongs to uid 65534"
    elif taken == "open-mode":
        twin.mkdir()
        twin.chmod(0o777)
        why = "open to other users"
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        twin.symlink_to(tmp_path / "elsewhere")
        why = "not a plain directory"
    out = _start_fails(_deep_data_dir(tmp_path), _twin_env(tmpdir))
    assert "refusing the socket directory" in out and why in out
    assert not any(p.name.endswith(".sock") for p in tmp_path.rglob("*")), "a socket was bound there"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory as another user")
def test_a_client_refuses_a_twin_link_into_a_directory_another_user_controls(tmp_path: Path) -> None:
    d = _deep_data_dir(tmp_path)
    DataDir(d).ensure()
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o777)
    os.chown(foreign, 65534, 65534)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the forger's socket, waiting for our requests
    listener.bind(str(foreign / "x.sock"))
    listener.listen(1)
    listener.settimeout(0.5)
    try:
        os.symlink(foreign / "x.sock", DataDir(d).socket)
        p = subprocess.run(
            [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), "list"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 2 and "refusing the socket directory" in p.stderr and "Traceback" not in p.stderr
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected: the request (and its task text) never reached it
    finally:
        listener.close()


def test_a_deep_data_dir_serves_through_a_private_twin(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    d = _deep_data_dir(tmp_path)
    h = Headless(d, env=_twin_env(tmpdir))
    try:
        twin = Path(socket_connect_path(DataDir(d).socket)).parent
        assert twin == tmpdir / f"crewtui-{os.getuid()}" and mode(twin) == 0o700
        assert call(h.dd.socket, "ping")["result"] == "pong"
    finally:
        h.stop()


# ------------------------------------------------------------------------------------------ file modes


def test_every_file_the_runtime_writes_is_owner_only_whatever_the_umask_and_dir_mode(tmp_path: Path) -> None:
    base = tmp_path / "mine"
    base.mkdir()
    d = base / "data"
    d.mkdir(mode=0o755)  # a data dir the user made, readable by others
    d.chmod(0o755)
    crew = tmp_path / "crew.toml"
    made = tmp_path / "made-by-agent"
    agent = f"import json, pathlib; pathlib.Path({str(made)!r}).write_text('x'); print(json.dumps(dict(ok=1)))"
    crew.write_text(
        textwrap.dedent(
            f"""
            [crew]
            name = "modes"
            registry = "registry.json"
            [agents.w]
            command = [{json.dumps(PY)}, "-c", {json.dumps(agent)}]
            """
        )
    )
    h = Headless(d, crew, umask=0o022)
    try:
        key = call(h.dd.socket, "spawn", label="modes-1", agent="w")["result"]["key"]
        wait_until(lambda: (d / "registry.json").exists(), 20, "the registry")
        # A retry moves the first attempt's files to tries/1: those must stay private too.
        call(h.dd.socket, "spawn", label="modes-2", argv=[PY, "-c", "import sys; sys.exit(3)"])
        wait_until(lambda: call(h.dd.socket, "get", ref="modes-2")["result"]["state"] == "failed", 20, "a failure")
        call(h.dd.socket, "retry", ref="modes-2")
        wait_until(lambda: call(h.dd.socket, "get", ref="modes-2")["result"]["state"] == "failed", 20, "the retry")
    finally:
        h.stop()
    # The dashboard's log file, written by a process with the same umask.
    subprocess.run(
        [
            PY,
            "-c",
            f"import logging; from crewtui.launch import log_to_file; from crewtui.locations import DataDir; "
            f"log_to_file(DataDir({str(d)!r})); logging.info('hello')",
        ],
        env=ENV,
        check=True,
        umask=0o022,
        timeout=30,
    )
    written = [p for p in d.rglob("*") if p.is_file() or p.is_fifo()]
    names = {p.name for p in written}
    assert {
        "crewtui.db",
        "runtime.lock",
        "registry.json",
        "crewtui.log",
        "stdout.log",
        "pid.json",
        "exit.json",
    } <= names
    assert any("tries" in p.parts for p in written)
    assert {str(p.relative_to(d)): oct(mode(p)) for p in written if mode(p) & 0o077} == {}
    assert all(mode(p) & 0o077 == 0 for p in d.rglob("*") if p.is_dir())
    # ... while what the agent writes in the user's tree keeps the user's umask.
    assert key and mode(made) == 0o644
