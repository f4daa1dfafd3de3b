"""Tests of the crew file loader: the demo and DESIGN.md crews load, and every mistake is one clear line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from crewtui.config import (
    TEMPLATE_FIELDS,
    CrewConfig,
    Rate,
    default_crew,
    load_crew,
    parse_crew,
    render_command,
    render_template,
    template_values,
)
from crewtui.errors import ConfigError
from crewtui.locations import demo_crew_path

DESIGN_EXAMPLE = """
[crew]
name = "enterprise"
max_concurrent = 50          # all sessions
stale_after = "10m"          # no output for this long = stale

[agents.writer]              # how to run a task: an argv, never a shell string
command = ["python", "-m", "crewtui.agents.demo", "--task", "{task}"]
pool = "model-a"

[pools.model-a]              # a rate-limit pool shared by every session that names it
max_concurrent = 20
rate = "30/min"              # token bucket for starts and for `ctl acquire`
retry_on_exit = [75]         # exit codes that mean "rate limited, try later"
retry_on_stderr = "429|rate.?limit"
backoff = { base = "2s", max = "5m" }   # exponential, full jitter

[[cron]]
name = "blog-publisher"
schedule = { kind = "cron", expr = "0 9 * * *", tz = "Europe/Berlin" }  # or kind="every", every="15m"; kind="at", at="…"
misfire = "run_once"         # skip | run_once | run_all, within misfire_grace
overlap = "forbid"           # allow | forbid | replace
watchdog_after = "15m"
max_attempts = 2
spawn = { agent = "writer", label = "blog-publisher-{item}-{date}", task = "Write {item}", domain = "article:{item}", items = ["superada", "openclaw-guide"] }

[[cron]]
name = "sweep-stale"
schedule = { kind = "every", every = "5m" }
action = "sweep"
"""

# A small valid crew that the bad-input cases below break one key at a time.
BASE = """
[agents.writer]
command = ["python", "-m", "x", "--task", "{task}"]
pool = "model-a"

[pools.model-a]
rate = "30/min"
"""


def crew_error(text: str, source: str = "crew.toml") -> str:
    with pytest.raises(ConfigError) as info:
        parse_crew(text, source)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{source}: "), message
    assert "Traceback" not in message and "pydantic" not in message.lower(), message
    return message


def cron(body: str, name: str = "job") -> str:
    return f'{BASE}\n[[cron]]\nname = "{name}"\n{body}\n'


SPAWN = 'spawn = { agent = "writer", label = "job-{item}-r{run}", items = ["a", "b"] }'
EVERY = 'schedule = { kind = "every", every = "5m" }'


# ------------------------------------------------------------------------------------------ good crews


def test_demo_crew_loads_with_its_agents_pools_and_jobs() -> None:
    crew = load_crew(demo_crew_path())
    assert crew.crew.name == "enterprise"
    assert crew.crew.stale_after == 45.0
    assert crew.source == demo_crew_path().absolute()
    assert crew.registry_path(Path("/data")) == Path("/data/registry.json")
    assert {"writer", "scout", "auditor", "lead", "sub"} <= set(crew.agents)
    assert all(agent.command[0] == "{python}" for agent in crew.agents.values())
    assert "--fail-rate" in crew.agents["scout"].command
    assert "--hang-rate" in crew.agents["auditor"].command
    assert "--children" in crew.agents["lead"].command

    pool = crew.pools["model-a"]
    assert pool.max_concurrent == 20
    assert pool.rate == Rate(count=30, per=60.0)
    assert pool.retry_on_exit == [75]
    assert pool.retry_on_stderr == "429|rate.?limit"
    assert (pool.backoff.base, pool.backoff.max) == (2.0, 60.0)
    assert "model-b" in crew.pools

    jobs = {job.name: job for job in crew.cron}
    spawning = [j for j in crew.cron if j.spawn is not None]
    # What a newcomer sees at once: every spawning job fires at start, ~50 sessions in six or more groups.
    assert all(j.fire_at_start for j in spawning)
    groups = {j.spawn.label.split("-{")[0] for j in spawning}  # type: ignore[union-attr]
    assert len(groups) >= 6
    at_start = sum(len(j.spawn.items) for j in spawning) + 3 * len(jobs["synthesis-lead"].spawn.items)  # type: ignore[union-attr]
    assert 40 <= at_start <= 70 <= crew.crew.max_concurrent + 10
    blog = jobs["blog-publisher"]
    assert blog.spawn is not None and blog.spawn.label == "blog-publisher-{item}-{date}-r{run}"
    assert blog.spawn.domain == "article:{item}" and (blog.watchdog_after, blog.max_attempts) == (90.0, 2)
    audit = jobs["ads-auditor"]
    assert audit.watchdog_after is not None and audit.max_attempts == 2
    assert jobs["sweep-stale"].action == "sweep" and jobs["sweep-stale"].schedule.every == 60.0
    assert jobs["heartbeat"].text


def test_design_example_crew_loads() -> None:
    crew = parse_crew(DESIGN_EXAMPLE, "design.toml")
    assert crew.crew.stale_after == 600.0
    assert crew.pools["model-a"].backoff.max == 300.0
    job = crew.cron[0]
    assert job.schedule.kind == "cron" and job.schedule.expr == "0 9 * * *" and job.schedule.tz == "Europe/Berlin"
    assert job.watchdog_after == 900.0
    assert crew.cron[1].action == "sweep" and crew.cron[1].schedule.every == 300.0
    assert crew.source is None


def test_load_crew_sets_source_and_resolves_registry_in_the_data_dir(tmp_path: Path) -> None:
    path = tmp_path / "crew.toml"
    path.write_text('[crew]\nregistry = "out/registry.json"\n')
    crew = load_crew(path)
    assert crew.source == path
    assert crew.registry_path(tmp_path / "data") == tmp_path / "data" / "out" / "registry.json"
    path.write_text('[crew]\nregistry = "/abs/registry.json"\n')
    assert load_crew(path).registry_path(tmp_path) == Path("/abs/registry.json")
    assert load_crew(tmp_path / "crew.toml").crew.name == "crew"


def test_default_crew_has_no_agents() -> None:
    crew = default_crew()
    assert isinstance(crew, CrewConfig)
    assert crew.agents == {} and crew.cron == [] and crew.registry_path(Path("/data")) is None
    assert crew.crew.max_concurrent == 50 and crew.backend.kind == "local"


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [("30/min", 30, 60.0), ("5/s", 5, 1.0), ("100/h", 100, 3600.0), ("10/15m", 10, 900.0), ("2/day", 2, 86400.0)],
)
def test_rates(text: str, count: int, per: float) -> None:
    crew = parse_crew(f'[pools.p]\nrate = "{text}"\n')
    assert crew.pools["p"].rate == Rate(count=count, per=per)


@pytest.mark.parametrize(("text", "seconds"), [('"90s"', 90.0), ('"1h30m"', 5400.0), ('"250ms"', 0.25), ("30", 30.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_crew(f"[crew]\nstale_after = {text}\n").crew.stale_after == seconds


def test_naive_at_is_read_in_the_schedule_zone() -> None:
    crew = parse_crew(cron('schedule = { kind = "at", at = 2026-04-02T09:00:00, tz = "Europe/Berlin" }\ntext = "hi"'))
    at = crew.cron[0].schedule.at
    assert at is not None and at.astimezone(UTC) == datetime(2026, 4, 2, 7, 0, tzinfo=UTC)
    crew = parse_crew(cron('schedule = { kind = "at", at = 2026-04-02T09:00:00Z }\ntext = "hi"'))
    assert crew.cron[0].schedule.at == datetime(2026, 4, 2, 9, 0, tzinfo=UTC)


def test_every_kind_of_payload_is_accepted() -> None:
    assert parse_crew(cron(f"{EVERY}\n{SPAWN}")).cron[0].spawn is not None
    assert parse_crew(cron(f'{EVERY}\naction = "sweep"')).cron[0].action == "sweep"
    assert parse_crew(cron(f'{EVERY}\ntext = "tick"')).cron[0].text == "tick"


# ------------------------------------------------------------------------------------------- bad crews


def test_not_toml() -> None:
    msg = crew_error('[crew]\nname = "x"\nmax concurrent = 5\n')
    assert msg.startswith("crew.toml: line 3, column 5: not valid TOML (Expected '=' after a key")
    assert crew_error("a = ").startswith("crew.toml: end of file: not valid TOML (")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^.*nope\.toml: no such file$"):
        load_crew(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="got a directory"):
        load_crew(tmp_path)


def test_unknown_top_level_key() -> None:
    msg = crew_error('[crews]\nname = "x"\n')
    assert msg.startswith("crew.toml: crews: unknown key (known: crew, agents, pools, cron, backend, notify)")
    assert "source" not in msg
    assert crew_error('source = "/etc"\n').startswith("crew.toml: source: unknown key (known: crew, agents")


def test_unknown_nested_key() -> None:
    msg = crew_error("[crew]\nmax_concurent = 5\n")
    assert msg.startswith("crew.toml: crew.max_concurent: unknown key (known: name, max_concurrent, stale_after")
    assert "did you mean 'max_concurrent'?" in msg
    msg = crew_error(cron('schedule = { kind = "every", every = "5m", evry = 3 }\naction = "sweep"'))
    assert msg.startswith("crew.toml: cron[0].schedule.evry: unknown key (known: kind, at, every, anchor, expr")
    msg = crew_error(BASE + "commnd = []\n")
    assert msg.startswith("crew.toml: pools.model-a.commnd: unknown key (known: max_concurrent, rate")


def test_wrong_type() -> None:
    assert crew_error('[crew]\nmax_concurrent = "lots"\n') == (
        "crew.toml: crew.max_concurrent: expected an integer, got 'lots'"
    )
    assert crew_error("[crew]\nname = 5\n") == "crew.toml: crew.name: expected a string, got 5"
    assert crew_error('crew = "x"\n') == "crew.toml: crew: expected a table, got 'x'"
    assert crew_error('[backend]\nkind = "k8s"\n') == "crew.toml: backend.kind: expected 'local' or 'ray', got 'k8s'"
    assert crew_error('[backend]\nmode = "pods"\n') == "crew.toml: backend.mode: expected 'host' or 'actor', got 'pods'"
    msg = crew_error('[agents.w]\ncommand = ["python", 3]\n')
    assert msg == "crew.toml: agents.w.command[1]: expected a string, got 3"


def test_missing_required_key() -> None:
    assert crew_error("[agents.w]\npool = 'p'\n") == "crew.toml: agents.w.command: required key is missing"


def test_cron_names_an_unknown_agent() -> None:
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writr", label = "job-r{{run}}" }}'))
    assert msg == "crew.toml: cron[0].spawn.agent: unknown agent 'writr'; known: writer"


def test_agent_names_an_unknown_pool() -> None:
    msg = crew_error('[agents.w]\ncommand = ["x"]\npool = "nope"\n[pools.a]\n[pools.b]\n')
    assert msg == "crew.toml: agents.w.pool: unknown pool 'nope'; known: a, b"


def test_command_as_a_string() -> None:
    msg = crew_error('[agents.writer]\ncommand = "python x.py"\n')
    assert msg == (
        "crew.toml: agents.writer.command: expected a list of strings (an argv, never a shell string), "
        "got 'python x.py'"
    )


def test_empty_command() -> None:
    msg = crew_error("[agents.writer]\ncommand = []\n")
    assert msg.startswith("crew.toml: agents.writer.command: expected a list of strings")
    assert msg.endswith("got []")


def test_command_with_unknown_placeholder() -> None:
    msg = crew_error('[agents.writer]\ncommand = ["x", "--task", "{tsak}"]\n')
    assert msg.startswith("crew.toml: agents.writer.command[2]: expected only the fields {task}, {label}, {key}")
    assert "got {tsak}" in msg


@pytest.mark.parametrize("bad", ['"15 minutes"', '"m"', "-5", "true"])
def test_bad_duration(bad: str) -> None:
    msg = crew_error(f"[crew]\nstale_after = {bad}\n")
    assert msg.startswith("crew.toml: crew.stale_after: expected a duration")
    assert "got" in msg


def test_bad_rate() -> None:
    msg = crew_error('[pools.p]\nrate = "30 per minute"\n')
    assert msg == (
        "crew.toml: pools.p.rate: expected a rate like '30/min', '5/s', '100/h' or '10/15m', got '30 per minute'"
    )


def test_invalid_cron_expression() -> None:
    msg = crew_error(cron('schedule = { kind = "cron", expr = "61 9 * * *" }\naction = "sweep"'))
    assert msg.startswith("crew.toml: cron[0].schedule.expr: expected a cron expression like '0 9 * * *'")
    assert "got '61 9 * * *' (the minute field '61' is not valid)" in msg
    msg = crew_error(cron('schedule = { kind = "cron", expr = "0 25 * * *" }\naction = "sweep"'))
    assert "(the hour field '25' is not valid)" in msg
    msg = crew_error(cron('schedule = { kind = "cron", expr = "* * *" }\naction = "sweep"'))
    assert "(3 fields; a cron expression has 5" in msg


def test_unknown_time_zone() -> None:
    msg = crew_error(cron('schedule = { kind = "cron", expr = "0 9 * * *", tz = "Mars/Olympus" }\naction = "sweep"'))
    assert msg == (
        "crew.toml: cron[0].schedule.tz: expected an IANA time zone like 'UTC' or 'Europe/Berlin', got 'Mars/Olympus'"
    )


@pytest.mark.parametrize("every", ['"0s"', "0", '"-5m"'])
def test_every_must_be_positive(every: str) -> None:
    msg = crew_error(cron(f'schedule = {{ kind = "every", every = {every} }}\naction = "sweep"'))
    assert msg.startswith("crew.toml: cron[0].schedule.every: expected a duration")


def test_at_missing_for_kind_at() -> None:
    msg = crew_error(cron('schedule = { kind = "at" }\naction = "sweep"'))
    assert msg == "crew.toml: cron[0].schedule.at: expected at = 2026-04-02T09:00:00 for kind 'at', got nothing"


def test_key_of_another_schedule_kind() -> None:
    msg = crew_error(cron('schedule = { kind = "every", every = "5m", expr = "0 9 * * *" }\naction = "sweep"'))
    assert msg.startswith("crew.toml: cron[0].schedule.expr: expected no 'expr' for kind 'every'")


def test_unknown_schedule_kind() -> None:
    msg = crew_error(cron('schedule = { kind = "hourly" }\naction = "sweep"'))
    assert msg == "crew.toml: cron[0].schedule.kind: expected 'at', 'every' or 'cron', got 'hourly'"


def test_two_payloads_in_one_cron() -> None:
    msg = crew_error(cron(f'{EVERY}\naction = "sweep"\ntext = "hi"'))
    assert msg == "crew.toml: cron[0]: expected exactly one payload key of spawn, action or text, got action and text"
    msg = crew_error(cron(EVERY))
    assert msg == "crew.toml: cron[0]: expected exactly one payload key of spawn, action or text, got none"


def test_duplicate_cron_name() -> None:
    text = cron(f'{EVERY}\naction = "sweep"', "twin") + f'\n[[cron]]\nname = "twin"\n{EVERY}\ntext = "x"\n'
    msg = crew_error(text)
    assert msg == "crew.toml: cron[1].name: expected a name not used by another job, got 'twin' (also cron[0])"


def test_cron_name_must_be_label_like() -> None:
    msg = crew_error(cron(f'{EVERY}\naction = "sweep"', "Blog Publisher"))
    assert msg.startswith("crew.toml: cron[0].name: expected a name of 1-128 characters")
    assert msg.endswith("got 'Blog Publisher'")


@pytest.mark.parametrize("section", ["[crew]\n", "[agents.w]\ncommand = ['x']\n"])
def test_limits_below_minimum(section: str) -> None:
    key = "max_children" if section.startswith("[crew]") else "max_attempts"
    msg = crew_error(f"{section}{key} = 0\n")
    assert msg.endswith(f"{key}: expected a number >= 1, got 0")


def test_cron_max_attempts_below_one() -> None:
    msg = crew_error(cron(f"{EVERY}\nmax_attempts = 0\n{SPAWN}"))
    assert msg == "crew.toml: cron[0].max_attempts: expected a number >= 1, got 0"


def test_label_template_with_unknown_field() -> None:
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writer", label = "job-{{itme}}" }}'))
    assert msg == (
        "crew.toml: cron[0].spawn.label: expected only the fields {item}, {date}, {time}, {run}, "
        "got {itme} in 'job-{itme}'"
    )
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writer", label = "job", task = "do {{what}}" }}'))
    assert msg.startswith("crew.toml: cron[0].spawn.task: expected only the fields")
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writer", label = "job", domain = "a:{{x}}" }}'))
    assert msg.startswith("crew.toml: cron[0].spawn.domain: expected only the fields")


def test_label_template_rendering_to_an_invalid_label() -> None:
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writer", label = "Job {{item}}", items = ["a"] }}'))
    assert msg.startswith("crew.toml: cron[0].spawn.label: expected a template that renders to a valid label")
    assert "got 'Job {item}' (renders to 'Job a' for item 'a')" in msg


def test_label_template_shared_by_several_items() -> None:
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writer", label = "job-r{{run}}", items = ["a", "b"] }}'))
    assert msg.startswith("crew.toml: cron[0].spawn.label: expected a template that gives each item its own label")


def test_empty_items() -> None:
    msg = crew_error(cron(f'{EVERY}\nspawn = {{ agent = "writer", label = "job", items = [] }}'))
    assert msg == "crew.toml: cron[0].spawn.items: expected at least 1 element(s), got []"


def test_bad_regex() -> None:
    msg = crew_error('[pools.p]\nretry_on_stderr = "rate(limit"\n')
    assert msg.startswith(
        "crew.toml: pools.p.retry_on_stderr: expected a regular expression (Python re), got 'rate(limit' ("
    )


def test_backoff_max_below_base() -> None:
    msg = crew_error('[pools.p]\nbackoff = { base = "1m", max = "10s" }\n')
    assert msg == "crew.toml: pools.p.backoff.max: expected a duration of at least base (60s), got 10s"


def test_several_problems_still_one_line() -> None:
    msg = crew_error('[crew]\nmax_concurrent = "x"\nmax_children = "y"\n')
    assert msg == "crew.toml: crew.max_concurrent: expected an integer, got 'x' (and 1 more problem)"


# ------------------------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    "task",
    ["write it with spaces", 'it\'s "quoted" text', "x; rm -rf / && echo $HOME `id`", "braces {label} {{x}}", ""],
)
def test_render_command_keeps_the_task_one_element(task: str) -> None:
    command = ["{python}", "-m", "agent", "--task", "{task}", "--tag={label}/{key}"]
    values = {"task": task, "label": "l-1", "key": "s-1", "python": "/venv/bin/python"}
    argv = render_command(command, values)
    assert argv == ["/venv/bin/python", "-m", "agent", "--task", task, "--tag=l-1/s-1"]
    assert len(argv) == len(command)


def test_render_command_unknown_field() -> None:
    with pytest.raises(ConfigError, match=r"^agents\.w\.command\[1\]: expected only the fields .* got \{tsak\}"):
        render_command(["x", "{tsak}"], {"task": "t"}, where="agents.w.command")


def test_render_template() -> None:
    values = dict(zip(TEMPLATE_FIELDS, ["superada", "2026-04-02", "0900", "3"]))
    assert render_template("blog-{item}-{date}-{time}-r{run}", values, "w") == "blog-superada-2026-04-02-0900-r3"
    assert render_template("{{literal}} {item}", values, "w") == "{literal} superada"


@pytest.mark.parametrize(
    ("template", "bad"),
    [
        ("a-{nope}", "{nope}"),
        ("a-{item.upper}", "{item.upper}"),
        ("{run:03d}", "{run:03d}"),
        ("{}", "{}"),
        ("{item!r}", "{item!r}"),
    ],
)
def test_render_template_refuses_other_fields(template: str, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_template(template, {"item": "x", "run": "1"}, "crew.toml: cron[0].spawn.label")
    assert str(info.value) == (
        f"crew.toml: cron[0].spawn.label: expected only the fields {{item}}, {{run}}, got {bad} in {template!r}"
    )


@pytest.mark.parametrize("template", ["a-{item", "a-}", "{"])
def test_render_template_refuses_stray_braces(template: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_template(template, {"item": "x"}, "where")
    assert str(info.value).startswith("where: expected a template with balanced braces")
    assert str(info.value).endswith(f"got {template!r}")


def test_template_values() -> None:
    when = datetime(2026, 4, 2, 9, 5)
    assert template_values("a", when, 7) == {"item": "a", "date": "2026-04-02", "time": "0905", "run": "7"}


def test_agent_presets_are_checked_naming_the_key() -> None:
    assert crew_error('[agents.a]\npreset = "clod"\n') == (
        "crew.toml: agents.a.preset: unknown preset 'clod': use one of aider, claude-code, codex, gemini, jsonl, "
        "openclaw, opencode"
    )
    assert crew_error('[agents.a]\npreset = "aider"\npermissions = "ask"\n') == (
        "crew.toml: agents.a.permissions: permissions = 'ask' does not apply to preset aider (use 'allow')"
    )
    assert crew_error('[agents.a]\ncommand = ["x"]\nargs = ["--fast"]\n') == (
        "crew.toml: agents.a.args: args applies only to an agent with a preset (or put it in command)"
    )
    assert crew_error('[agents.a]\npreset = "jsonl"\n') == (
        "crew.toml: agents.a.command: preset jsonl needs a command (the program that speaks the protocol)"
    )
    assert "price.input" in crew_error('[agents.a]\npreset = "codex"\nprice = { input = -1 }\n')


def test_a_preset_agent_needs_no_command_and_gets_the_safest_permissions_it_can_honour() -> None:
    crew = parse_crew(
        '[agents.c]\npreset = "claude-code"\n[agents.g]\npreset = "gemini"\n[agents.a]\npreset = "aider"\n',
        "crew.toml",
    )
    assert [crew.agents[n].options().permissions for n in "cga"] == ["ask", "deny", "allow"]
    assert crew.agents["c"].command is None


def test_the_readmes_crew_file_of_every_preset_loads() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme[readme.index("[agents.coder]                 # Claude") :]
    crew = parse_crew(block[: block.index("```")], "README.md")
    assert {a.preset for a in crew.agents.values()} == {
        "claude-code",
        "codex",
        "gemini",
        "opencode",
        "aider",
        "openclaw",
        "jsonl",
    }


# ------------------------------------------------------------------------------------------ gateway pools

GATEWAY_POOL = """
[pools.anthropic]
provider = "anthropic"
max_concurrent_requests = 8
requests = "50/min"
input_tokens = "40000/min"
output_tokens = "8000/min"
budget_usd = { per_day = 25.0, per_session = 2.0 }
on_budget = "pause"
price = { input = 3.0, output = 15.0 }
"""


def test_a_gateway_pool_as_the_readme_shows_it() -> None:
    crew = parse_crew(GATEWAY_POOL, "crew.toml")
    pool = crew.pools["anthropic"]
    assert pool.gateway and pool.upstream_url == "https://api.anthropic.com"
    assert pool.max_concurrent_requests == 8
    assert pool.requests is not None and pool.requests.per_second == pytest.approx(50 / 60)
    assert pool.input_tokens is not None and pool.input_tokens.count == 40000
    assert pool.budget_usd is not None and (pool.budget_usd.per_day, pool.budget_usd.per_session) == (25.0, 2.0)
    assert pool.on_budget == "pause" and pool.max_retries == 8
    openai = parse_crew('[pools.o]\nprovider = "openai"\nupstream = "http://127.0.0.1:9/v1/"\n').pools["o"]
    assert openai.upstream_url == "http://127.0.0.1:9/v1"
    # A crew written back out (as `ctl cron add` does) reads the same.
    again = parse_crew(GATEWAY_POOL, "crew.toml").model_dump()
    assert type(crew).model_validate(again).pools["anthropic"] == pool
    assert type(crew).model_validate(parse_crew(BASE).model_dump()).pools["model-a"].gateway is False


def test_a_gateway_key_on_a_pool_without_provider() -> None:
    msg = crew_error("[pools.p]\nmax_concurrent_requests = 3\n")
    assert msg == (
        "crew.toml: pools.p.max_concurrent_requests: max_concurrent_requests applies only to a gateway pool "
        '(set provider = "anthropic" or "openai")'
    )


def test_an_unknown_provider() -> None:
    msg = crew_error('[pools.p]\nprovider = "mistral"\n')
    assert msg.startswith("crew.toml: pools.p.provider: ") and "'anthropic'" in msg and "'openai'" in msg


def test_a_budget_without_a_price() -> None:
    msg = crew_error(
        '[agents.w]\ncommand = ["x"]\npool = "p"\n[pools.p]\nprovider = "anthropic"\nbudget_usd = { per_day = 5.0 }\n'
    )
    assert (
        msg
        == "crew.toml: pools.p.budget_usd: a budget in dollars needs a price: set price on the pool (agent 'w' has none)"
    )


@pytest.mark.parametrize("bad", ['"api.anthropic.com"', '"ftp://x"', "3", '"http://"'])
def test_a_bad_upstream(bad: str) -> None:
    msg = crew_error(f'[pools.p]\nprovider = "anthropic"\nupstream = {bad}\n')
    assert msg.startswith("crew.toml: pools.p.upstream: expected an http(s) URL like 'https://api.anthropic.com', got")


def test_a_bad_budget_and_on_budget() -> None:
    assert crew_error('[pools.p]\nprovider = "openai"\nbudget_usd = { per_day = -1 }\n').startswith(
        "crew.toml: pools.p.budget_usd.per_day: "
    )
    assert crew_error('[pools.p]\nprovider = "openai"\non_budget = "shrug"\n').startswith(
        "crew.toml: pools.p.on_budget: "
    )


# ------------------------------------------------------------------------------------------ workspaces

WORKSPACE = """
[agents.coder]
command = ["x"]
[agents.coder.workspace]
repo = "~/src/blog"
base = "main"
into = "main"
setup = ["npm", "ci"]
copy = [".env"]
merge = "manual"
"""


def test_an_agent_workspace_as_the_readme_shows_it(tmp_path: Path) -> None:
    ws = parse_crew(WORKSPACE).agents["coder"].workspace
    assert ws is not None
    assert (ws.base, ws.into, ws.setup, ws.copy_files, ws.merge, ws.history) == (
        "main",
        "main",
        ["npm", "ci"],
        [".env"],
        "manual",
        "merge",
    )
    assert ws.repo_path(tmp_path / "crew.toml") == str(Path("~/src/blog").expanduser())
    rel = parse_crew('[agents.c]\ncommand = ["x"]\n[agents.c.workspace]\nrepo = "blog"\n').agents["c"].workspace
    assert rel is not None and rel.repo_path(tmp_path / "crew.toml") == str(tmp_path / "blog")
    again = type(parse_crew(WORKSPACE)).model_validate(parse_crew(WORKSPACE).model_dump())
    assert again.agents["coder"].workspace == ws


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ('copy = ["../secrets"]', "copy", "expected paths inside the repository"),
        ('setup = "npm ci"', "setup", "expected a list of strings"),
        ('merge = "sometimes"', "merge", ""),
        ('history = "squash"', "history", ""),
    ],
)
def test_bad_workspace_keys(line: str, key: str, expected: str) -> None:
    msg = crew_error(f'[agents.c]\ncommand = ["x"]\n[agents.c.workspace]\nrepo = "r"\n{line}\n')
    assert msg.startswith(f"crew.toml: agents.c.workspace.{key}: "), msg
    assert expected in msg
