"""console, send, kernel ls/stop/restart/install: thin commands over tether.kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tether import invocation
from tether.cli.render import say

if TYPE_CHECKING:
    from tether.kernel.lifecycle import RemoteKernel

CONSOLE_HELP = """An IPython console whose kernel runs on the target, in the project dir.

The kernel is started on first use and outlives the console: quit and run it again to
find the same state. Code sent with `tether send` and its output appear here too.

Examples:

  tether console

  tether console --on gpu --name scratch
"""

SEND_HELP = """Run FILE:START-END (1-based, inclusive), FILE:LINE, FILE or stdin in the kernel.

The lines are smart-unindented. Prints stdout, stderr, results and tracebacks; exit 1
if the code raised.

Examples:

  tether send train.py:40-58

  pbpaste | tether send
"""

SPEC_INSTALL_HELP = """Install a Jupyter kernelspec for this project's kernel on TARGET.

Its name (printed) is tether-TARGET-TAG, TAG marking this project, so projects whose
targets share a name keep a spec each; it is shown as "tether: TARGET (project)".

JupyterLab, VS Code, PyCharm, nbconvert and papermill can then pick the persistent remote
kernel that `tether console` and `tether send` use. A frontend's shutdown leaves it
running; its restart and interrupt act on it.

Examples:

  tether kernel spec install

  jupyter nbconvert --to notebook --execute --ExecutePreprocessor.kernel_name=NAME a.ipynb
"""

LINK_HELP = """Keep the kernel's link for other Jupyter clients, in the background.

The connection file it prints (also in `tether kernel ls`) then works for any Jupyter
client (`jupyter console --existing FILE`, a BlockingKernelClient) after this command
has exited: a background process keeps the forwards and re-makes them after a cut. It
leaves after --idle without any client using the kernel (default 30m), when the kernel
is restarted elsewhere, or on `tether kernel stop`. `tether send` starts the same link.

Examples:

  tether kernel link

  tether kernel link --on gpu --idle 2h
"""

kernel_app = typer.Typer(
    help="Remote IPython kernels: ls, link, stop, restart, interrupt, install, spec.",
    no_args_is_help=True,
)
KERNEL_ARG = typer.Argument(None, help="Kernel name (default: the target's).")
ON_TARGET = typer.Option(None, "--on", help="Target.")
spec_app = typer.Typer(help="Jupyter kernelspecs for other frontends.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add console, send and the kernel group."""
    app.command("console", help=CONSOLE_HELP)(console)
    app.command("send", help=SEND_HELP)(send)
    kernel_app.command("ls", help="List kernels on the targets.")(kernel_ls)
    kernel_app.command("link", help=LINK_HELP)(kernel_link)
    kernel_app.command("stop", help="Stop a kernel (default: the target's).")(kernel_stop)
    kernel_app.command("restart", help="Restart a kernel with a fresh state.")(kernel_restart)
    kernel_app.command("interrupt", help="Interrupt the running cell of a kernel.")(
        kernel_interrupt
    )
    kernel_app.command("install", help="Install ipykernel into the target's python.")(
        kernel_install
    )
    spec_app.command("install", help=SPEC_INSTALL_HELP)(kernel_spec_install)
    spec_app.command("ls", help="List tether's kernelspecs (every project's).")(kernel_spec_ls)
    spec_app.command("rm", help="Remove kernelspecs (default: this project's for the target).")(
        kernel_spec_rm
    )
    kernel_app.add_typer(spec_app, name="spec")
    app.add_typer(kernel_app, name="kernel")


def console(
    on: str = typer.Option(None, "--on", help="Target (default: the default target)."),
    name: str = typer.Option(None, "--name", help="Kernel name (default: the target's)."),
) -> int:
    """Open the console."""
    from tether import config as config_module
    from tether.envs.spec import find
    from tether.kernel import console as console_module
    from tether.kernel.lifecycle import RemoteKernel

    config = config_module.load()
    kernel = RemoteKernel.of(config.one(on), name)
    answer = kernel.ensure(find(config))
    path = kernel.connect(answer["connection"])
    return console_module.run(path, kernel.target, kernel.name, answer["connection"], config.root)


def send(
    spec: str = typer.Argument(None, metavar="[FILE[:START[-END]]]"),
    on: str = typer.Option(None, "--on", help="Target (default: the default target)."),
    name: str = typer.Option(None, "--name", help="Kernel name (default: the target's)."),
) -> int:
    """Run code in the kernel."""
    from tether.kernel.send import read_code, send_code

    code = read_code(spec)
    return send_code(code, on, name) if code.strip() else 0


def kernel_ls(
    on: list[str] = typer.Option(None, "--on", help="These targets (default: the defaults)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    show_all: bool = typer.Option(False, "--all", help="Other projects' kernels too."),
) -> None:
    """List this project's kernels (--all: every kernel on the targets' hosts)."""
    import asyncio
    import time

    from tether import config as config_module
    from tether.agent.wire_jobs import KernelList
    from tether.cli.render import print_json, table
    from tether.kernel import names, remote
    from tether.kernel.lifecycle import RemoteKernel

    targets = config_module.load().pick(on or [])

    async def gather() -> list[dict[str, object]]:
        answers = await asyncio.gather(*(remote.ask(t, KernelList()) for t in targets))
        rows = []
        for target, answer in zip(targets, answers, strict=True):
            for kernel in answer["kernels"]:
                name, mine = names.shown_name(target, str(kernel["name"]))
                found = RemoteKernel(target, str(kernel["name"]))
                local = found.local_file
                shown = {
                    **kernel,
                    "name": name,
                    "remote_name": kernel["name"],
                    "local_connection_file": str(local) if local.exists() else None,
                    "link": found.link_state(),
                }
                if mine or show_all:
                    rows.append({**shown, "target": target.name, "this_project": mine})
        return rows

    kernels = asyncio.run(gather())
    if as_json:
        print_json(kernels)
        return
    rows = []
    for kernel in kernels:
        started = kernel.get("started")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started))) if started else ""  # type: ignore[arg-type]
        rows.append(
            (
                kernel["name"] if kernel["this_project"] else f"{kernel['name']} (other project)",
                kernel["target"],
                kernel["state"],
                kernel.get("pid"),
                when,
                "link " + str(kernel["link"]["state"]),  # type: ignore[index]
                kernel.get("root"),
            )
        )
    table(None, ["name", "target", "state", "pid", "started", "link", "dir"], rows)
    for kernel in kernels:
        if kernel.get("local_connection_file"):  # printed whole: a table would wrap it
            say(f"{kernel['name']} ({kernel['target']}): {kernel['local_connection_file']}")
    if any(kernel.get("local_connection_file") for kernel in kernels):
        say(
            "(connection files: for any Jupyter client while the link is up; "
            "`tether kernel link` starts it)"
        )


def kernel_link(
    on: str = typer.Option(None, "--on", help="Target."),
    name: str = typer.Option(None, "--name", help="Kernel name (default: the target's)."),
    idle: str = typer.Option(None, "--idle", help="Leave after this long unused (30m)."),
) -> None:
    """Start (or keep) the kernel's background link; print its connection file."""
    from tether import config as config_module
    from tether.envs.spec import find
    from tether.errors import TetherError
    from tether.jobs.housekeeping import parse_duration
    from tether.kernel import background, names
    from tether.kernel.lifecycle import RemoteKernel

    config = config_module.load()
    kernel = RemoteKernel.of(config.one(on), name)
    idle_s = parse_duration(idle, "--idle") if idle else None
    answer = kernel.ensure(find(config))
    kernel.link(answer["connection"], idle_s=idle_s)
    with background.start_lock(kernel.target, kernel.name):  # a new link's until it serves
        state = kernel.link_state(answer["connection"]["key"])
    if state["state"] == "down":
        log = names.kernels_dir() / "helpers.log"
        raise TetherError(f"the link to kernel {kernel.name} did not start", "", f"see {log}")
    minutes = float(state.get("idle_s") or background.IDLE_EXIT_S) / 60
    say(
        f"link {state['state']} for kernel {kernel.name} on {kernel.target.name} "
        f"(pid {state['pid']}); it keeps the forwards until {minutes:g} min pass without "
        "a client using the kernel, or `tether kernel stop`"
    )
    say(f"connection file: {kernel.local_file}")


def kernel_stop(name: str = KERNEL_ARG, on: str = ON_TARGET) -> None:
    """Stop a kernel."""
    kernel = _kernel(on, name)
    kernel.stop()
    say(f"stopped kernel {kernel.name} on {kernel.target.name}")


def kernel_restart(name: str = KERNEL_ARG, on: str = ON_TARGET) -> None:
    """Restart a kernel."""
    from tether import config as config_module
    from tether.envs.spec import find
    from tether.kernel.lifecycle import RemoteKernel

    config = config_module.load()
    kernel = RemoteKernel.of(config.one(on), name)
    answer = kernel.restart(find(config))
    path = kernel.connect(answer["connection"])  # for clients
    kernel.link(answer["connection"])  # and the link that keeps it usable
    pid = answer["record"]["pid"]
    say(f"restarted kernel {kernel.name} on {kernel.target.name} (pid {pid})")
    say(f"connection file: {path}")


def kernel_interrupt(name: str = KERNEL_ARG, on: str = ON_TARGET) -> None:
    """Interrupt a kernel's running cell (SIGINT on the remote); the kernel stays."""
    kernel = _kernel(on, name)
    kernel.interrupt()
    say(f"interrupted kernel {kernel.name} on {kernel.target.name}")


def _kernel(on: str | None, name: str | None) -> RemoteKernel:
    """The kernel a command names: --on's target (else the default), NAME (else its own)."""
    from tether import config as config_module
    from tether.kernel.lifecycle import RemoteKernel

    return RemoteKernel.of(config_module.load().one(on), name)


def kernel_spec_install(
    on: str = typer.Option(None, "--on", help="Target."),
    name: str = typer.Option(None, "--name", help="Kernel name (default: the target's)."),
) -> None:
    """Write the kernelspec into the user's Jupyter data dir."""
    from tether import config as config_module
    from tether.kernel import spec

    config = config_module.load()
    target = config.one(on)
    installed, replaced = spec.install(config.root, target, name)
    for old in replaced:
        say(f"removed the old kernelspec {old} (now {installed.name})")
    say(f"installed kernelspec {installed.name} ({installed.display_name}) in {installed.path}")
    say(
        "run a notebook on it: jupyter nbconvert --to notebook --execute "
        f"--ExecutePreprocessor.kernel_name={installed.name} NOTEBOOK.ipynb"
    )


def kernel_spec_ls(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List tether's kernelspecs in the user's Jupyter data dir."""
    from tether.cli.render import print_json, table
    from tether.kernel import spec

    found = spec.listed()
    if as_json:
        print_json(
            [
                {
                    "name": s.name,
                    "display_name": s.display_name,
                    "project": s.project,
                    "target": s.target,
                    "kernel": s.kernel,
                    "path": str(s.path),
                    "stale": s.stale,
                }
                for s in found
            ]
        )
        return
    rows = [
        (s.name, s.display_name, s.project + (" (gone)" if s.stale else ""), s.target)
        for s in found
    ]
    table(None, ["name", "shown as", "project", "target"], rows)


def kernel_spec_rm(
    names: list[str] = typer.Argument(None, help="Spec names (default: this project's)."),
    on: str = typer.Option(None, "--on", help="Target."),
    name: str = typer.Option(None, "--name", help="Kernel name (default: the target's)."),
) -> None:
    """Remove kernelspecs: the ones named, else this project's for the target."""
    from tether import config as config_module
    from tether.kernel import spec

    if names:
        removed = spec.remove_named(list(names))
    else:
        config = config_module.load()
        removed = spec.remove_mine(config.root, config.one(on), name)
    for gone in removed:
        say(f"removed kernelspec {gone}")


def kernel_install(
    on: str = typer.Option(None, "--on", help="Target."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> int:
    """Install ipykernel."""
    import asyncio

    from tether import config as config_module
    from tether.agent.wire_jobs import KernelInstall
    from tether.errors import RemoteError
    from tether.kernel import remote

    target = config_module.load().one(on)
    python = remote.python_argv(target)
    command = " ".join([*python, "-m", "pip", "install", "--user", "ipykernel"])
    if not yes and not typer.confirm(f"Run `{command}` on {target.host}?", default=False):
        invocation.stderr().write("tether: nothing installed\n")
        return 1
    # A system-managed python (PEP 668) is refused with what to do (agent/wire.TABLE).
    answer = asyncio.run(remote.ask(target, KernelInstall(python)))
    if answer["returncode"] != 0:
        raise RemoteError(target.host, "pip install ipykernel", answer["output"])
    say(f"ipykernel installed for {python[0]} on {target.name}")
    return 0
