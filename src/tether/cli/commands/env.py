"""env sync / status / prune: the remote Python environment built from the project's spec."""

from __future__ import annotations

import typer

from tether import invocation
from tether.cli.render import say

ENV_HELP = """The remote Python environment, built from what the project already has.

The spec is `[env] requirements = [...]`, else uv.lock (+ pyproject.toml), else
pyproject.toml's [project] dependencies, else requirements.txt; ipykernel is always added.
Each target gets a venv under ~/.cache/tether/envs/<digest>, built once (uv, else venv +
pip) and shared by every job and kernel with the same spec: jobs and the console run in it.

Examples:

  tether env sync

  tether env sync --offline      # wheels downloaded here, pushed; no index needed there

  tether env status --on gpu

  tether env prune --dry-run
"""

env_app = typer.Typer(help=ENV_HELP, no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the env group."""
    env_app.command("sync", help="Build the env of the current spec on the targets.")(sync)
    env_app.command("status", help="Per target: the spec's env, built or not, differences.")(status)
    env_app.command("prune", help="Remove envs no job, kernel or project's spec uses.")(prune)
    app.add_typer(env_app, name="env")


def _spec() -> tuple[object, object]:
    from tether import config as config_module
    from tether.envs.spec import find
    from tether.errors import TetherError

    config = config_module.load()
    spec = find(config)
    if spec is None:
        raise TetherError(
            "this project has no env spec",
            "no [env] table, uv.lock, pyproject [project] dependencies or requirements.txt",
            "add a requirements.txt (or an [env] table) to the project",
        )
    return config, spec


def _say(line: str) -> None:

    invocation.stderr().write(line + "\n")
    invocation.stderr().flush()


def sync(
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
    offline: bool = typer.Option(
        False,
        "--offline",
        help="Download the wheels here for each target's platform and push them; the build "
        "there uses no package index.",
    ),
) -> None:
    """Build (once) the env for the current spec on every target."""
    import asyncio

    from tether.config import Config, Target
    from tether.envs import client
    from tether.envs.spec import EnvSpec
    from tether.sync.targets import each_target
    from tether.transport.channel import AgentChannel

    config, spec = _spec()
    assert isinstance(config, Config) and isinstance(spec, EnvSpec)

    async def one(target: Target, channel: AgentChannel) -> str:
        answer = await client.ensure(channel, target, spec, _say, offline=offline)
        return client.summary(target, answer, spec)

    for line in asyncio.run(each_target(config.pick(on or []), one)):
        say(line)


def status(
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show each target's env for the current spec."""
    import asyncio

    from tether.agent.wire_jobs import EnvStatus
    from tether.config import Config, Target
    from tether.envs import client
    from tether.envs.spec import EnvSpec, differences
    from tether.sync.targets import each_target
    from tether.transport.channel import AgentChannel

    config, spec = _spec()
    assert isinstance(config, Config) and isinstance(spec, EnvSpec)

    async def one(target: Target, channel: AgentChannel) -> dict[str, object]:
        answer, _ = await channel.call(EnvStatus(spec.wire(False), root=target.path))
        return answer

    targets = config.pick(on or [])
    answers = asyncio.run(each_target(targets, one))
    if as_json:
        from tether.cli.render import print_json

        rows = []
        for target, answer in zip(targets, answers, strict=True):
            meta = answer.get("meta") or answer.get("previous") or {}
            built = answer.get("meta") or {}
            assert isinstance(meta, dict) and isinstance(built, dict)
            rows.append(
                {
                    "target": target.name,
                    "spec": spec.source,
                    "spec_digest": spec.digest,
                    "env_digest": answer["digest"],
                    "built": answer["state"] == "ready",
                    "python_version": meta.get("python_version"),
                    "size": built.get("size"),
                    "differences": differences(spec.pins, meta.get("packages")),
                }
            )
        print_json(rows)
        return
    for target, answer in zip(targets, answers, strict=True):
        for line in client.status_lines(target, spec, answer):
            say(line)


def prune(
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; remove nothing."),
) -> None:
    """Remove unused envs on the targets' hosts."""
    import asyncio

    from tether import config as config_module
    from tether.agent.wire_jobs import EnvPrune
    from tether.config import Target
    from tether.envs.client import _human
    from tether.sync.targets import each_target
    from tether.transport.channel import AgentChannel

    config = config_module.load()

    async def one(target: Target, channel: AgentChannel) -> dict[str, object]:
        answer, _ = await channel.call(EnvPrune(dry_run))
        return answer

    targets = config.pick(on or [])
    verb = "would remove" if dry_run else "removed"
    for target, answer in zip(targets, asyncio.run(each_target(targets, one)), strict=True):
        removed = answer["removed"]
        assert isinstance(removed, list)
        size = sum(float(env.get("size") or 0) for env in removed)
        say(f"{target.name}: {verb} {len(removed)} env(s), {_human(size)}")
        for env in removed:
            say(f"  {env.get('digest')} ({env.get('source') or 'unknown spec'})")
