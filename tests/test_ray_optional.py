"""The Ray backend's configuration and its message when Ray is missing: no Ray cluster (or Ray) needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crewtui.config import parse_crew
from crewtui.errors import ConfigError
from tests.conftest import PY


def test_ray_missing_is_one_clear_line(tmp_path: Path) -> None:
    """Without Ray installed, naming the Ray backend gives one line that says how to install it."""
    crew = tmp_path / "crew.toml"
    crew.write_text('[backend]\nkind = "ray"\n')
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from crewtui.cli import main\n"
        f"sys.argv = ['crewtui', 'run', {str(crew)!r}, '--headless', '--data-dir', {str(tmp_path / 'd')!r}]\n"
        "main()"
    )
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "backend.kind" in lines[0] and "pip install 'crewtui[ray]'" in lines[0]
    assert not (tmp_path / "d").exists()  # nothing was created


def test_config_error_without_ray_names_file_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from crewtui.config import parse_crew

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(
        ConfigError, match=r"^c\.toml: backend\.kind: the Ray backend needs Ray.*pip install 'crewtui\[ray\]'"
    ):
        parse_crew('[backend]\nkind = "ray"\n', source="c.toml")


def test_agent_resources_become_ray_actor_options() -> None:
    crew = parse_crew(
        '[agents.coder]\ncommand = ["x"]\n'
        'resources = { num_cpus = 2, num_gpus = 0.5, memory = "1.5GiB", custom = { llm_slot = 1 }, '
        'node_labels = { zone = "eu-1" } }\n',
        source="c.toml",
    )
    assert crew.agents["coder"].resources.ray_options() == {
        "num_cpus": 2.0,
        "num_gpus": 0.5,
        "memory": 1610612736,
        "resources": {"llm_slot": 1.0},
        "label_selector": {"zone": "eu-1"},
    }
    assert crew.backend.kind == "local"  # the default stays local processes


@pytest.mark.parametrize(
    ("toml", "where", "expected"),
    [
        ('[agents.a]\ncommand = ["x"]\nresources = { memory = "lots" }\n', "agents.a.resources.memory", "memory size"),
        ('[agents.a]\ncommand = ["x"]\nresources = { num_cpus = -1 }\n', "agents.a.resources.num_cpus", "zero or more"),
        ('[agents.a]\ncommand = ["x"]\nresources = { cpus = 1 }\n', "agents.a.resources", "cpus"),
        ('[backend]\naddress = "somewhere"\n', "backend.address", "HOST:PORT"),
        ('[backend]\nnamespace = "a b"\n', "backend.namespace", "1-64 characters"),
        ('[backend]\nkind = "k8s"\n', "backend.kind", "local"),
    ],
)
def test_bad_backend_and_resources_are_one_line_naming_the_key(toml: str, where: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_crew(toml, source="c.toml")
    message = str(err.value)
    assert message.startswith(f"c.toml: {where}"), message
    assert expected in message and "\n" not in message
