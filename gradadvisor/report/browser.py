"""Opening a report in headless Chromium, to check it and to take screenshots.

The report promises to load nothing from the network and to run cleanly in a
real browser; the browser test and ``scripts/make_screenshot.py`` check that
here.  Chromium is driven over the Chrome DevTools protocol, which is JSON
messages on one WebSocket, so a short WebSocket client on the standard library
replaces Selenium or Playwright and adds no dependency.

Every wait is bounded by a timeout, and :class:`Chromium` always ends the
browser it started (and only that one) when its ``with`` block exits.

Example:
    >>> with Chromium() as browser:
    ...     page = browser.open("file:///tmp/report.html", width=1200)
    ...     assert not page.errors and page.requests == [page.url]
    ...     png = page.screenshot(max_height=2400)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from ..errors import GradAdvisorError

#: Where Chromium usually is: Debian's path first, then names found on PATH.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome",
                       "google-chrome-stable")
#: Flags for a quiet, offline, throw-away browser.  ``--no-sandbox`` because CI
#: containers run as root, where Chromium's sandbox refuses to start.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    "--force-device-scale-factor=1",
    # Nothing the report could ask for resolves: a stray request shows up in the
    # check below instead of reaching the internet.
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class BrowserError(GradAdvisorError, RuntimeError):
    """Chromium could not be found, started, or driven within its time limit."""


def find_chromium() -> str | None:
    """The path of a Chromium or Chrome executable, or None if none is installed."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.path.isabs(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
        else:
            found = shutil.which(candidate)
            if found:
                return found
    return None


class _WebSocket:
    """The client side of RFC 6455, as much as DevTools needs: text messages."""

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url)
        self._socket = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self._socket.sendall((
            f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._buffer:
            self._fill(deadline)
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        expected = base64.b64encode(
            hashlib.sha1((key + _WEBSOCKET_GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        if " 101 " not in lines[0] + " " or headers.get("sec-websocket-accept") != expected:
            raise BrowserError(f"Chromium refused the DevTools connection: {lines[0]!r}.")

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError("Chromium did not answer over DevTools in time.")
        self._socket.settimeout(remaining)
        try:
            chunk = self._socket.recv(1 << 16)
        except socket.timeout:
            raise BrowserError("Chromium did not answer over DevTools in time.") from None
        if not chunk:
            raise BrowserError("Chromium closed the DevTools connection.")
        self._buffer += chunk

    def _read(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            self._fill(deadline)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        # Clients must mask every frame (RFC 6455, 5.3).
        header = bytearray([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 1 << 16:
            header.append(0x80 | 126)
            header += length.to_bytes(2, "big")
        else:
            header.append(0x80 | 127)
            header += length.to_bytes(8, "big")
        mask = os.urandom(4)
        header += mask
        repeated = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            length, "big") if length else b""
        self._socket.sendall(bytes(header) + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def receive(self, deadline: float) -> str:
        """The next text message, answering pings on the way."""
        message = b""
        while True:
            first, second = self._read(2, deadline)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(2, deadline), "big")
            elif length == 127:
                length = int.from_bytes(self._read(8, deadline), "big")
            mask = self._read(4, deadline) if second & 0x80 else None
            payload = self._read(length, deadline)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise BrowserError("Chromium closed the DevTools connection.")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if first & 0x80:
                return message.decode("utf-8")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        with contextlib.suppress(OSError):
            self._socket.close()


class Page:
    """One tab: what it logged and requested, and ways to look at it.

    Attributes:
        url: The address it was opened at.
        errors: Uncaught exceptions, ``console.error`` calls and browser log
            entries of level error (a blocked request or CSP violation shows
            up here too), as text.
        requests: Every URL the page requested, the document itself included.
    """

    def __init__(self, browser: "Chromium", target: str, session: str, url: str):
        self._browser = browser
        self._target = target
        self._session = session
        self.url = url
        self.errors: list = []
        self.requests: list = []

    def _event(self, method: str, params: dict) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            described = details.get("exception", {}).get("description", "")
            self.errors.append(f"uncaught exception: {details.get('text', '')} {described}".strip())
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            values = [str(arg.get("value", arg.get("description", "")))
                      for arg in params.get("args", [])]
            self.errors.append("console." + params["type"] + ": " + " ".join(values))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source', 'log')}: {entry.get('text', '')} "
                               f"{entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def call(self, method: str, params: dict | None = None) -> dict:
        """Send one DevTools command to this tab and return its result."""
        return self._browser.call(method, params, session=self._session)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"Evaluating {expression!r} failed: {result['exceptionDetails']}.")
        return result.get("result", {}).get("value")

    def screenshot(self, max_height: int | None = None) -> bytes:
        """A PNG of the whole page at the viewport's width, cut at ``max_height`` pixels."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics.get("contentSize")
        width = metrics.get("cssLayoutViewport", {}).get("clientWidth") or size["width"]
        height = size["height"] if max_height is None else min(size["height"], max_height)
        result = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        return base64.b64decode(result["data"])

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self._browser.call("Target.closeTarget", {"targetId": self._target})


class Chromium:
    """A headless Chromium started for one job and always ended afterwards.

    Args:
        executable: The browser to run; by default :func:`find_chromium`.
        timeout: Seconds any single wait may take (start-up, a command, a page load).

    Raises:
        BrowserError: no browser is installed, or it does not start in time.
    """

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError(
                "No Chromium found (looked for " + ", ".join(CHROMIUM_CANDIDATES) + "). "
                "Install it, e.g. 'apt-get install chromium'.")
        self.timeout = timeout
        self._process = None
        self._socket = None
        self._profile = None
        self._pages: dict = {}
        self._events = []
        self._next_id = 0
        self._stderr: list = []

    def __enter__(self) -> "Chromium":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Launch the browser and connect to its DevTools endpoint."""
        self._profile = tempfile.mkdtemp(prefix="gradadvisor-chromium-")
        self._process = subprocess.Popen(
            [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            # Its own process group, so close() can end the helpers it spawns too.
            start_new_session=True)
        lines: queue.Queue = queue.Queue()

        def drain(stream):
            # Reading stderr to the end also keeps Chromium from blocking on a full pipe.
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                self._stderr.append(line)
                lines.put(line)

        threading.Thread(target=drain, args=(self._process.stderr,), daemon=True).start()
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._process.poll() is not None and lines.empty()):
                    raise BrowserError(
                        f"Chromium ({self.executable}) did not open DevTools within "
                        f"{self.timeout:g} s. Its last output: {' | '.join(self._stderr[-5:])}")
                try:
                    line = lines.get(timeout=min(remaining, 0.5))
                except queue.Empty:
                    continue
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                if found:
                    self._socket = _WebSocket(found.group(1), self.timeout)
                    return
        except BaseException:
            self.close()
            raise

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a DevTools command and wait for its answer, recording events meanwhile."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._socket.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(
                        f"DevTools refused {method}: {answer['error'].get('message')}.")
                return answer.get("result", {})

    def _receive(self, deadline: float) -> dict:
        answer = json.loads(self._socket.receive(deadline))
        if "method" in answer:
            page = self._pages.get(answer.get("sessionId"))
            if page is not None:
                page._event(answer["method"], answer.get("params", {}))
            self._events.append((answer.get("sessionId"), answer["method"]))
        return answer

    def _wait_for(self, session: str, method: str) -> None:
        deadline = time.monotonic() + self.timeout
        while (session, method) not in self._events:
            self._receive(deadline)

    def open(self, url: str, width: int = 1200, height: int = 900, mobile: bool = False) -> Page:
        """Open ``url`` in a new tab of this size and wait until it has loaded.

        Logging and network events are switched on before the page loads, so
        the page's :attr:`Page.errors` and :attr:`Page.requests` are complete.
        """
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session, url)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        self._events.clear()
        result = page.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"Chromium could not open {url}: {result['errorText']}.")
        self._wait_for(session, "Page.loadEventFired")
        # One more round trip delivers anything logged while the load finished.
        page.evaluate("document.readyState")
        return page

    def close(self) -> None:
        """End the browser and everything it started; remove its profile folder."""
        if self._socket is not None:
            with contextlib.suppress(BrowserError, OSError):
                self._socket.send(json.dumps({"id": -1, "method": "Browser.close"}))
            self._socket.close()
            self._socket = None
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            # Renderer and zygote helpers live in the group started for this browser.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None


def file_url(path) -> str:
    """The ``file://`` URL of a local file."""
    return Path(path).resolve().as_uri()
