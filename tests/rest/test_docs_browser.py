"""/docs (Swagger UI) and /redoc (ReDoc) in a real browser, as a user opens them.

The real server (``banking serve`` on the embedded default) and headless Chromium: a page counts
as working only when the browser, after running its scripts under the service's
Content-Security-Policy, shows every operation of ``/openapi.json`` and no error. Chromium runs
with a closed network (a proxy on a port where nothing listens, no name resolution): whatever
the page would fetch from elsewhere fails, and its net log proves that the page asked only the
server and that no connection left 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.processes import ServerProcess, free_port

BANKING = [sys.executable, "-m", "banking.cli"]
STRICT_CSP = "default-src 'self'"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
STARTUP_TIMEOUT_SECONDS = 30
BROWSER_TIMEOUT_SECONDS = 60
# Virtual time: the page's timers run without waiting, so this bounds, not adds, the run time.
VIRTUAL_TIME_BUDGET_MS = 15000


# --- the server -------------------------------------------------------------------------


@dataclass
class Server:
    base: str
    spec: dict[str, Any]

    @property
    def operations(self) -> set[tuple[str, str]]:
        """(METHOD, path) of every operation in the OpenAPI document."""
        return {
            (method.upper(), path)
            for path, item in self.spec["paths"].items()
            for method in item
            if method in HTTP_METHODS
        }

    @property
    def operation_ids(self) -> set[str]:
        ids = {
            operation.get("operationId", "")
            for item in self.spec["paths"].values()
            for method, operation in item.items()
            if method in HTTP_METHODS
        }
        assert "" not in ids, "every operation needs an operationId (ReDoc's anchors use it)"
        return ids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("docs-server")
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    # The embedded default: no database, Redis, Kafka or tracing from this environment.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update({"DATA_DIR": str(root / "data"), "LOG_LEVEL": "WARNING"})
    process = ServerProcess(
        # serve binds gRPC too: a free port, not 50051, which may be taken
        [*BANKING, "serve", "--port", str(port), "--grpc-port", str(grpc_port)],
        env=env,
        log_path=root / "serve.log",
        ready=f"{base}/ready",
        timeout=STARTUP_TIMEOUT_SECONDS,
    ).start()
    try:
        spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
        assert spec["openapi"].startswith("3.1"), spec["openapi"]
        assert spec["paths"], spec
        yield Server(base=base, spec=spec)
    finally:
        process.stop()


# --- the browser ------------------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        if self.tag in ("script", "style"):
            return ""
        return "".join([*self.texts, *(child.text() for child in self.children)])

    def words(self, limit: int = 1500) -> str:
        """The visible text, whitespace collapsed: what a failure message shows."""
        return " ".join(self.text().split())[:limit]

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, css_class: str) -> list[Element]:
        return [element for element in self.walk() if css_class in element.classes]


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
_VOID |= {"track", "wbr"}


class _TreeBuilder(HTMLParser):
    """The DOM Chromium serialised, as a tree (the standard library has no DOM for HTML)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self._open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self._open[-1].children.append(element)
        if tag not in _VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._open[-1].texts.append(data)


@dataclass
class Request:
    url: str
    initiator: str | None = None
    request_type: str | None = None
    status_line: str | None = None


@dataclass
class Visit:
    dom: Element
    requests: list[Request]
    connect_attempts: list[str]
    console: list[str]

    def csp_violations(self) -> list[str]:
        """What the browser refused under the policy, as its console reported it."""
        return [line for line in self.console if "violates the following Content Security" in line]

    def resource_urls(self) -> list[tuple[str, str]]:
        """(tag, URL) of what the page's elements load: scripts, styles, images, frames."""
        return [
            (element.tag, value)
            for element in self.dom.walk()
            if element.tag != "a"
            for name in ("src", "href", "xlink:href")
            if (value := element.attrs.get(name)) is not None
        ]


def _net_log(path: Path) -> tuple[list[Request], list[str]]:
    """The URL requests and the TCP connection attempts of a Chromium net log."""
    log = json.loads(path.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    source_types = {number: name for name, number in log["constants"]["logSourceType"].items()}
    requests: dict[int, Request] = {}
    attempts: list[str] = []
    for event in log["events"]:
        name = names[event["type"]]
        params = event.get("params") or {}
        if name == "TCP_CONNECT_ATTEMPT" and "address" in params:
            attempts.append(params["address"])
        if source_types[event["source"]["type"]] != "URL_REQUEST":
            continue
        request = requests.setdefault(event["source"]["id"], Request(url=""))
        if "url" in params and not request.url:
            request.url = params["url"]
        if name == "URL_REQUEST_START_JOB" and "initiator" in params:
            request.initiator = params["initiator"]
            request.request_type = params.get("request_type")
        if name == "HTTP_TRANSACTION_READ_RESPONSE_HEADERS":
            request.status_line = params["headers"][0]
    return [request for request in requests.values() if request.url], attempts


def open_in_browser(url: str, workdir: Path) -> Visit:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: run scripts/install-system-deps.sh"
    workdir.mkdir(parents=True, exist_ok=True)
    net_log = workdir / "net-log.json"
    closed_port = free_port()  # nothing listens there: every proxied request fails here
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={workdir / 'profile'}",
        # The closed network: every origin but loopback goes through a proxy that is not
        # there, and no host name resolves, so nothing asked for can leave the machine.
        f"--proxy-server=http://127.0.0.1:{closed_port}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--log-net-log={net_log}",
        "--enable-logging=stderr",
        "--v=0",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        "--dump-dom",
        url,
    ]
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    builder = _TreeBuilder()
    builder.feed(result.stdout)
    builder.close()
    requests, attempts = _net_log(net_log)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return Visit(dom=builder.root, requests=requests, connect_attempts=attempts, console=console)


def assert_served_strictly(server: Server, page: str) -> httpx.Response:
    """The page as the server sends it: HTML under the strict policy, no inline script."""
    response = httpx.get(server.base + page, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == STRICT_CSP
    builder = _TreeBuilder()
    builder.feed(response.text)
    scripts = [element for element in builder.root.walk() if element.tag == "script"]
    assert scripts, response.text
    for script in scripts:
        assert script.attrs.get("src", "").startswith("/docs-assets/"), script.attrs
        assert not "".join(script.texts).strip(), "inline script: the policy would block it"
    return response


def assert_only_local(server: Server, visit: Visit, page: str) -> None:
    """The page used only the server's files, and nothing left 127.0.0.1."""
    origin = urlsplit(server.base)
    references = visit.resource_urls()
    assert any(tag == "script" for tag, _ in references), references
    for tag, url in references:
        target = urlsplit(url)
        assert target.scheme in ("", origin.scheme, "data"), (tag, url)
        assert not target.netloc or target.netloc == origin.netloc, (tag, url)
    # The page's requests: the navigation and whatever a document asked for (the browser's
    # own background requests have no initiator; the closed network fails them here).
    own = [
        request
        for request in visit.requests
        if request.request_type == "main frame" or request.initiator not in (None, "not an origin")
    ]
    requested = {request.url for request in own}
    assert server.base + page in requested, requested
    assert server.base + "/openapi.json" in requested, requested
    for request in own:
        assert urlsplit(request.url).netloc == origin.netloc, (request.url, requested)
    answered = [request for request in visit.requests if request.status_line is not None]
    assert answered, visit.requests
    for request in answered:
        assert urlsplit(request.url).netloc == origin.netloc, request
    assert visit.connect_attempts, "the net log recorded no connection"
    for address in visit.connect_attempts:
        assert address.startswith(("127.", "[::1]")), (address, visit.connect_attempts)
    uncaught = [line for line in visit.console if "Uncaught" in line]
    assert not uncaught, uncaught


# --- the pages --------------------------------------------------------------------------


def test_swagger_ui_renders_every_operation_offline(server: Server, tmp_path: Path) -> None:
    assert_served_strictly(server, "/docs")
    visit = open_in_browser(server.base + "/docs", tmp_path)
    shown = "Unable to render this definition" in visit.dom.text()
    assert not shown, (visit.dom.words(), visit.console)
    errors = visit.dom.find("errors-wrapper")
    assert not errors, [error.text() for error in errors]
    titles = visit.dom.find("title")
    assert any(server.spec["info"]["title"] in title.text() for title in titles), visit.dom.words()

    blocks = visit.dom.find("opblock")
    rendered = set()
    for block in blocks:
        (method,) = block.find("opblock-summary-method")
        (path,) = block.find("opblock-summary-path")
        rendered.add((method.text().strip().upper(), path.attrs["data-path"]))
    assert len(blocks) >= len(server.operations), (len(blocks), sorted(server.operations))
    assert rendered == server.operations, {
        "missing": server.operations - rendered,
        "unexpected": rendered - server.operations,
    }
    assert_only_local(server, visit, "/docs")
    # Nothing refused: no inline script or style, no image from elsewhere (the icons that
    # swagger-ui.css inlined as data: URLs are files now, see scripts/fetch-docs-assets.sh).
    assert not visit.csp_violations(), visit.csp_violations()


def test_redoc_renders_every_operation_offline(server: Server, tmp_path: Path) -> None:
    assert_served_strictly(server, "/redoc")
    visit = open_in_browser(server.base + "/redoc", tmp_path)
    failures = ("Something went wrong", "Oops", "Error downloading")
    shown = [failure for failure in failures if failure in visit.dom.text()]
    assert not shown, (shown, visit.dom.words(), visit.console)
    headings = [element for element in visit.dom.walk() if element.tag == "h1"]
    title = server.spec["info"]["title"]
    assert any(title in heading.text() for heading in headings), (visit.dom.words(), visit.console)

    # ReDoc gives each operation a section "tag/<tag>/operation/<operationId>" (or
    # "operation/<operationId>" for an operation without a tag).
    section = re.compile(r"^(?:tag/[^/]+/)?operation/(.+)$")
    rendered = {
        match.group(1)
        for element in visit.dom.walk()
        if (match := section.match(element.attrs.get("id", "")))
    }
    expected = server.operation_ids
    assert rendered == expected, {
        "missing": expected - rendered,
        "unexpected": rendered - expected,
    }
    assert_only_local(server, visit, "/redoc")
    # What the policy refuses ReDoc is cosmetic only: the empty <style> elements that
    # redoc-init.js replaces with constructed sheets, perfect-scrollbar's inline styles (unused
    # with native scrollbars), the heading-link icon (a data: URL) and the Redocly logo of the
    # footer (an image from its CDN, which is hidden when it fails). Never a script, a worker
    # or a connection.
    for violation in visit.csp_violations():
        assert "Applying inline style" in violation or "Loading the image" in violation, violation
