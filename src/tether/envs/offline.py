"""`tether env sync --offline`: the env's wheels downloaded here for the remote's platform
and python, pushed to the host, so its build needs no package index.

The agent describes the interpreter the env is made from (python version, implementation,
ABI, the platform tags its wheels may carry); `pip download --only-binary=:all:` fetches
the spec's wheels (plus ipykernel, and uv where the host has no uv of tether's) from this
machine's index; the host's missing wheels go to ~/.cache/tether/wheels through the agent,
in chunks, each checked against its sha256 there. A package with no wheel for that platform
cannot be had this way: pip's verdict becomes one error line.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tether import invocation
from tether.agent.wire import Op
from tether.agent.wire_jobs import EnvWheelPut, EnvWheels
from tether.config import Target
from tether.envs.spec import EnvSpec
from tether.errors import TetherError
from tether.transport.channel import AgentChannel, check

CHUNK = 4 << 20
_WORD = re.compile(r"[A-Za-z0-9_.]+\Z")
Say = Any


class OfflineError(TetherError):
    """The wheels for an offline build could not be had here."""


def pip_options(described: Any, host: str) -> list[str]:
    """pip download's target options from what the agent said (hostile input: checked)."""
    ok = isinstance(described, dict)
    version = described.get("python_version") if ok else None
    impl = described.get("implementation") if ok else None
    abis = described.get("abis") if ok else None
    platforms = described.get("platforms") if ok else None
    words = [version, impl, *(abis or []), *(platforms or [])]
    if (
        not isinstance(version, str)
        or not re.fullmatch(r"\d+\.\d+", version)
        or not isinstance(abis, list)
        or not isinstance(platforms, list)
        or not platforms
        or not all(isinstance(word, str) and _WORD.match(word) for word in words)
    ):
        raise OfflineError(
            f"{host} described its python in a way tether cannot use", "", "report this"
        )
    options = ["--only-binary=:all:", "--python-version", version, "--implementation", str(impl)]
    for abi in abis:
        options += ["--abi", abi]
    for platform in platforms:
        options += ["--platform", platform]
    return options


def requirement_args(spec: EnvSpec, directory: Path) -> list[str]:
    """-r FILE for the spec's files written under directory (uv.lock: exported by uv)."""
    for name, text in spec.files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if spec.kind != "uv.lock":
        return [arg for name in spec.main for arg in ("-r", str(directory / name))]
    uv = shutil.which("uv")
    if uv is None:
        raise OfflineError(
            "an offline build of a uv.lock needs uv on this machine",
            "tether exports the lock with it to know which wheels to download",
            "install uv here (pipx install uv) or build online",
        )
    exported = directory / "tether-exported.txt"
    argv = [uv, "export", "--frozen", "--no-hashes", "--no-emit-project"]
    argv += ["--format", "requirements-txt", "-o", str(exported)]
    for extra in spec.extras:
        argv += ["--extra", extra]
    import subprocess

    done = subprocess.run(
        argv, cwd=directory, capture_output=True, text=True, check=False, env=invocation.spawn_env()
    )
    if done.returncode != 0:
        raise OfflineError(f"uv export of uv.lock failed: {_last(done.stderr)}", "", "")
    return ["-r", str(exported)]


def _last(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("WARNING", "[notice]"))]
    return "; ".join((useful or lines or ["no output"])[-2:])


async def download(
    spec: EnvSpec, target: Target, described: Any, work: Path, say: Say
) -> list[Path]:
    """The wheels of the spec (and ipykernel, and uv if the host lacks it) for the host."""
    options = pip_options(described, target.name)
    dest = work / "wheels"
    dest.mkdir()
    argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q"]
    argv += ["--dest", str(dest), *options]
    if spec.index_url:
        argv += ["--index-url", spec.index_url]
    argv += requirement_args(spec, work / "spec")
    argv += ["ipykernel"] + ([] if described.get("uv") else ["uv"])
    say(
        f"{target.name}: downloading wheels here for python {described['python_version']} "
        f"on {described['platforms'][0]}"
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=work,  # never the project: a bare name there could be read as a local directory
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        env=invocation.spawn_env(),
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        text = output.decode(errors="replace")
        from tether.agent.envbuild import failing_package

        package = failing_package(text.splitlines())
        what = f" for {package}" if package else ""
        raise OfflineError(
            f"downloading the wheels{what} for {target.name} failed: {_last(text)}",
            "",
            "the package needs a wheel for that platform and python on this machine's index",
        )
    return sorted(dest.glob("*.whl"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def push(channel: AgentChannel, target: Target, wheels: list[Path], say: Say) -> int:
    """Send the wheels the host lacks, pipelined in chunks; the bytes sent."""
    listing: list[dict[str, Any]] = [
        {"name": path.name, "sha256": _sha256(path), "size": path.stat().st_size} for path in wheels
    ]
    answer, _ = await channel.call(
        EnvWheels([{"name": w["name"], "sha256": w["sha256"]} for w in listing])
    )
    missing = set(answer["missing"])
    todo = [
        (path, item) for path, item in zip(wheels, listing, strict=True) if item["name"] in missing
    ]
    total = sum(int(item["size"]) for _, item in todo)
    say(f"{target.name}: pushing {len(todo)} of {len(wheels)} wheels ({total / 2**20:.1f} MB)")
    futures = []
    for path, item in todo:
        with path.open("rb") as handle:
            offset = 0
            while True:
                chunk = handle.read(CHUNK)
                put = EnvWheelPut(payload=chunk, offset=offset, **item)
                futures.append(channel.submit(put))
                await channel.flush()
                offset += len(chunk)
                if offset >= int(item["size"]):
                    break
    for future in futures:
        check(channel.host, Op.ENV_WHEEL_PUT, await future)
    return total


async def prepare(
    channel: AgentChannel, target: Target, spec: EnvSpec, described: Any, say: Say
) -> None:
    """Download the env's wheels for the host and push the ones it lacks."""
    with tempfile.TemporaryDirectory(prefix="tether-wheels-") as work:
        wheels = await download(spec, target, described, Path(work), say)
        await push(channel, target, wheels, say)
