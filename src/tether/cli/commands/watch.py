"""watch: push every save to the targets over long-lived channels (thin over tether.sync)."""

from __future__ import annotations

import typer

WATCH_HELP = """Push every save to every default target (or --to) until Ctrl-C.

A full push at start and after every reconnect, then each batch of changes (an editor's
save, a `git checkout`) in about one round trip. Same safety as push: a file changed on
the remote since the last sync is a conflict, shown in the status line and never
overwritten. One live status line per target (last sync and its latency, queue,
conflicts, errors). With --pull, new or changed results come back every few seconds.

Examples:

  tether watch

  tether watch --to gpu --to cpu-box

  tether watch --pull
"""


def register(app: typer.Typer) -> None:
    """Add watch."""
    app.command("watch", help=WATCH_HELP)(watch)


def watch(
    to: list[str] = typer.Option(None, "--to", help="Target name (repeatable)."),
    pull: bool = typer.Option(False, "--pull", help="Also bring results back as they appear."),
) -> int:
    """Mirror the project on every save."""
    import asyncio

    from tether import config as config_module
    from tether.sync import watch as watch_module

    config = config_module.load()
    targets = config.pick(to or [])
    try:
        return asyncio.run(watch_module.watch(config, targets, pull))
    except asyncio.CancelledError:
        return 130
