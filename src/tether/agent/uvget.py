"""tether's own uv on the remote: found in its cache (~/.cache/tether/uv/VERSION) or
fetched as a wheel from the remote's package index with the system trust store.

Shared by the env builder (tether_agent.envbuild) and offline builds (envwheels).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import sys
import zipfile
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:
    import ssl

Say = Callable[[str], None]

UV_WHEEL = re.compile(r"uv-(\d+(?:\.\d+)*)-py3-none-([A-Za-z0-9_.]+)\.whl\Z")
FETCH_TIMEOUT_S = 120


def cache_root() -> str:
    return os.path.expanduser("~/.cache/tether")


def version_key(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def own_uv() -> Optional[str]:
    """The newest uv tether unpacked before, or None."""
    top = os.path.join(cache_root(), "uv")
    try:
        versions = [v for v in os.listdir(top) if re.match(r"\d+(\.\d+)*\Z", v)]
    except OSError:
        return None
    for version in sorted(versions, key=version_key, reverse=True):
        binary = os.path.join(top, version, "uv")
        if os.access(binary, os.X_OK):
            return binary
    return None


def platform_fits(tags: str) -> bool:
    """Whether a wheel's platform tags (dot-separated) run on this machine."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform.startswith("linux"):
        libc, version = platform.libc_ver()
        have = version_key(version) if libc == "glibc" and version else (0,)
        for tag in tags.split("."):
            if not tag.endswith("_" + machine):
                continue
            if libc == "glibc" and tag.startswith("manylinux"):
                needs = (2, 17) if tag.startswith("manylinux2014") else _glibc_of(tag)
                if needs is not None and have >= needs:
                    return True
            if libc != "glibc" and tag.startswith("musllinux"):
                return True
        return False
    if sys.platform == "darwin":
        mac = "arm64" if machine == "aarch64" else machine
        return any(
            t.startswith("macosx") and t.endswith(("_" + mac, "_universal2"))
            for t in tags.split(".")
        )
    return False


def _glibc_of(tag: str) -> Optional[Tuple[int, ...]]:
    match = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _context(cafile: Optional[str]) -> ssl.SSLContext:
    """The system trust store (or pip's `cert`), as pip there would use."""
    import ssl  # here: ssl and urllib.request cost every agent ~3 MB, most never fetch

    return ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)


def _open(url: str, cafile: Optional[str], accept: str = "") -> Any:
    from urllib.request import Request, urlopen

    if url.startswith("file:") and os.path.isdir(urlsplit(url).path):
        url = url.rstrip("/") + "/index.html"
    headers = {"Accept": accept} if accept else {}
    headers["User-Agent"] = "tether-agent"
    context = _context(cafile) if url.startswith("https:") else None
    return urlopen(Request(url, headers=headers), timeout=FETCH_TIMEOUT_S, context=context)  # noqa: S310 - the user's own index


def index_files(index: str, project: str, cafile: Optional[str]) -> List[Tuple[str, str, str]]:
    """(file name, url, sha256 or '') of a project on a PEP 691 (JSON) or 503 (HTML) index."""
    url = index.rstrip("/") + "/" + project + "/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    with _open(url, cafile, accept) as response:
        kind = response.headers.get("Content-Type", "") if response.headers else ""
        body = response.read()
    found: List[Tuple[str, str, str]] = []
    if "json" in kind:
        for item in json.loads(body.decode("utf-8")).get("files", []):
            if item.get("yanked"):
                continue
            found.append(
                (
                    item["filename"],
                    urljoin(url, item["url"]),
                    item.get("hashes", {}).get("sha256", ""),
                )
            )
        return found
    for href, text in re.findall(
        r'<a [^>]*href="([^"]+)"[^>]*>([^<]+)</a>', body.decode("utf-8", "replace")
    ):
        if "data-yanked" in href:
            continue
        target = urljoin(url, href.replace("&amp;", "&"))
        digest = target.split("#sha256=", 1)[1] if "#sha256=" in target else ""
        found.append((text.strip(), target.split("#", 1)[0], digest))
    return found


def fetch_uv(index: str, cafile: Optional[str], say: Say) -> str:
    """Download the newest uv wheel for this machine from the index; unpack its binary."""
    candidates = []
    for name, url, digest in index_files(index, "uv", cafile):
        match = UV_WHEEL.match(name)
        if match and platform_fits(match.group(2)):
            candidates.append((version_key(match.group(1)), match.group(1), url, digest))
    if not candidates:
        raise OSError("no uv wheel for %s %s on %s" % (sys.platform, platform.machine(), index))
    _, version, url, digest = max(candidates)
    say("fetching uv %s from %s" % (version, urlsplit(url).netloc or index))
    with _open(url, cafile) as response:
        data = response.read()
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise OSError("the uv wheel from %s does not match its sha256" % url)
    return unpack_uv(data, version)


def unpack_uv(data: bytes, version: str) -> str:
    """The uv binary of a uv wheel's bytes, unpacked to ~/.cache/tether/uv/VERSION/uv."""
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        member = next(n for n in wheel.namelist() if re.match(r"uv-[^/]+\.data/scripts/uv\Z", n))
        binary = wheel.read(member)
    directory = os.path.join(cache_root(), "uv", version)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    final = os.path.join(directory, "uv")
    temp = "%s.%d.tmp" % (final, os.getpid())
    with open(temp, "wb") as handle:
        handle.write(binary)
    os.chmod(temp, 0o755)  # noqa: S103 - an executable, like any in ~/bin
    os.replace(temp, final)
    return final
