"""Headless Chromium driven over the DevTools protocol, for the tests of pages (the evaluation report, the
server's page): loads a page, gathers every console error, uncaught exception and failed load, evaluates
script and takes screenshots. Tests skip without chromium unless UNIGROUND_REQUIRE_CHROMIUM=1."""
import base64
import io
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

import pytest
from PIL import Image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-port=0"]


def chromium_or_skip():
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("UNIGROUND_REQUIRE_CHROMIUM") == "1":
            pytest.fail("UNIGROUND_REQUIRE_CHROMIUM=1 but no chromium on PATH (Debian: apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); set UNIGROUND_REQUIRE_CHROMIUM=1 "
                    "to make this a failure")
    return path


class WebSocket:
    """The client side of RFC 6455, enough for the DevTools protocol: text frames, masked, no extensions."""

    def __init__(self, url):
        host, port, path = re.match(r"ws://([^:/]+):(\d+)(/.*)", url).groups()
        self.socket = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                            .encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.socket.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response

    def send(self, text):
        payload, mask = text.encode(), os.urandom(4)
        length = len(payload)
        header = struct.pack("!B", 0x81) + (struct.pack("!B", 0x80 | length) if length < 126 else
                                            struct.pack("!BH", 0x80 | 126, length) if length < 1 << 16 else
                                            struct.pack("!BQ", 0x80 | 127, length))
        self.socket.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self):
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            message += self._read(length)
            if first & 0x80:
                return message.decode()

    def _read(self, count):
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            data += chunk
        return data


class Browser:
    """Headless Chromium driven over the DevTools protocol: loads pages and gathers every console error,
    uncaught exception and failed load."""

    def __init__(self, executable, profile):
        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            assert time.time() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        self.ws = WebSocket(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]
            self.events.append(message)

    def load(self, location):
        """Open a file (a path) or a URL and return the problems met: console errors, exceptions, failed
        requests, and images that did not decode."""
        self.events.clear()
        url = str(location) if "://" in str(location) else f"file://{location}"
        self.call("Page.navigate", url=url)
        deadline = time.time() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            assert time.time() < deadline, "the page did not load"
            self.call("Runtime.evaluate", expression="1")
        self.call("Runtime.evaluate", expression="new Promise(r => setTimeout(r, 200))", awaitPromise=True)
        broken = self.call("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"))
        return problems(self.events) + [f"image not shown: {src}" for src in broken["result"]["value"]]

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, path, clip=None):
        params = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        with open(path, "wb") as f:
            f.write(data)
        return Image.open(io.BytesIO(data)).convert("RGB")

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def problems(events):
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description') or details['text']}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            found.append(f"console.{params['type']}: {params['args']}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"failed load: {params['errorText']}")
    return found


def running_browser():
    """A started ``Browser`` for a module's fixture, closed and its profile removed afterwards."""
    executable = chromium_or_skip()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    browser = Browser(executable, profile)
    yield browser
    browser.close()
    shutil.rmtree(profile, ignore_errors=True)
