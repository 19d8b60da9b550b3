"""`tether sandbox up|down|ls`: a throwaway local sshd that acts as a remote machine."""

from __future__ import annotations

import typer

HELP = """A throwaway local sshd "remote" with its own home, for trying tether and for tests.

`up NAME` starts OpenSSH's sshd on 127.0.0.1 (free port, own keys, own home directory)
and adds `Host NAME` to ~/.ssh/config, so plain `ssh NAME` works. `down NAME` ends every
process it started and gives ~/.ssh/config back byte for byte.

Examples:

  tether sandbox up box1 && ssh box1 'echo $HOME'

  tether sandbox ls --json

  tether sandbox down box1
"""


def register(app: typer.Typer) -> None:
    """Add the `sandbox` sub-app to APP."""
    sub = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
    )

    @sub.command("up")
    def up_command(
        name: str = typer.Argument(
            ..., metavar="NAME", help="name of the sandbox, and of its ssh alias"
        ),
    ) -> None:
        """Start sandbox NAME and add `Host NAME` to ~/.ssh/config.

        Example: tether sandbox up box1 && ssh box1 hostname
        """
        from tether.cli import render
        from tether.hosts import sandbox

        box = sandbox.up(name)
        render.note(
            f"sandbox {box.name} is up: `ssh {box.name}` (port {box.port}, home {box.home})"
        )
        if not box.nss_wrapper:
            render.warn(
                "libnss_wrapper not found: the remote $HOME is the sandbox home, but its "
                "passwd home and login directory are not (`apt-get install libnss-wrapper`)"
            )

    @sub.command("down")
    def down_command(
        names: list[str] = typer.Argument(..., metavar="NAME...", help="the sandboxes"),
    ) -> None:
        """Stop each sandbox NAME, end its processes, remove its stanza and its files.

        The last one down also gives back what sandboxes added around ~/.ssh (a config,
        its backup and lock, the directory), if it was not there before.

        Example: tether sandbox down box1 box2
        """
        from tether.cli import render
        from tether.errors import TetherError
        from tether.hosts import sandbox

        failed: TetherError | None = None
        for name in dict.fromkeys(names):
            try:
                sandbox.down(name)
            except TetherError as error:  # the others still go down; the first error is said
                failed = failed or error
                continue
            render.note(f"sandbox {name} is down")
        if failed is not None:
            raise failed

    @sub.command("ls")
    def ls_command(
        as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    ) -> None:
        """List sandboxes: name, port, sshd pid, state (up/dead), remote home.

        Example: tether sandbox ls --json
        """
        from tether.cli import render
        from tether.hosts import sandbox

        boxes = sandbox.ls()
        if as_json:
            render.print_json([box.to_json() for box in boxes])
            return
        if not boxes:
            render.note("no sandboxes (start one with `tether sandbox up NAME`)")
            return
        rows = [
            (
                box.name,
                box.port,
                box.pid,
                box.state,
                box.home,
                "yes" if box.nss_wrapper else "no (HOME only)",
            )
            for box in boxes
        ]
        render.table("sandboxes", ["name", "port", "pid", "state", "home", "nss_wrapper"], rows)

    app.add_typer(sub, name="sandbox")
