"""Load a run's DEFT_Loop_Report.html in headless Chromium; fail on console errors, uncaught exceptions,
broken images or any network request; save a full-page screenshot.

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (NUL-separated JSON on fds 3/4), so
it needs only the standard library and Debian's `chromium` (`make browser-check` installs it).

    python bench/browser_check.py [--run RESULTS/run_X] [--out report.png] [--self-test]

Default run: the latest results/run_* of demo_workspace (what `make demo` writes). Exit 0 = clean page,
1 = problems found (listed), 2 = cannot run (no Chromium, no run).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WIDTH = 1400
TIMEOUT_S = 60.0
# A page with one deliberate error of each kind the check must catch (used by --self-test).
BROKEN_PAGE = """<!DOCTYPE html><html><body><h1>broken</h1>
<img src="missing.png"><script>console.error("deliberate console error"); undefinedFunction();</script>
</body></html>"""


class CdpPipe:
    """A minimal CDP client on Chromium's debugging pipe: commands out on fd 3, replies/events in on fd 4."""

    def __init__(self, chromium: str, profile: Path, stderr: Any = subprocess.DEVNULL) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def plumb() -> None:  # runs in the child: the protocol wants exactly fds 3 and 4
            # Move both ends above 4 first so neither dup2 below can clobber the other.
            read_end = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3, inheritable=True)
            os.dup2(write_end, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={WIDTH},1000",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=plumb, close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise ConnectionError("Chromium closed the debugging pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def drain(self, seconds: float) -> None:
        """Collect events for a moment (late console errors, image decode failures)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError, ConnectionError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_child)
        os.close(self._from_child)


def problems_in(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and any request that leaves the file itself."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            found.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"browser log error: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if params.get("type") != "Document" and not url.startswith("data:"):
                found.append(f"network request: {url}")
    return found


def check_page(chromium: str, html: Path, out_png: Path | None) -> tuple[list[str], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="deft-chromium-") as profile:
        cdp = CdpPipe(chromium, Path(profile))
        try:
            target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cdp.send(f"{domain}.enable", session=session)
            cdp.events.clear()
            cdp.send("Page.navigate", {"url": html.resolve().as_uri()}, session=session)
            cdp.wait_event("Page.loadEventFired")
            cdp.drain(0.5)
            facts = cdp.send(
                "Runtime.evaluate",
                {"expression": "JSON.stringify({sections: document.querySelectorAll('h2').length,"
                 " images: document.images.length,"
                 " broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,"
                 " svgs: document.querySelectorAll('svg').length,"
                 " ended: (document.querySelector('#run-ended span:last-child') || {}).textContent || null,"
                 " height: document.documentElement.scrollHeight})", "returnByValue": True},
                session=session,
            )
            page = json.loads(facts["result"]["value"])
            if out_png is not None:
                height = max(1000, min(int(page["height"]), 16000))
                cdp.send("Emulation.setDeviceMetricsOverride",
                         {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
                shot = cdp.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                session=session)
                out_png.parent.mkdir(parents=True, exist_ok=True)
                out_png.write_bytes(base64.b64decode(shot["data"]))
        finally:
            cdp.close()
    found = problems_in(cdp.events)
    if page["broken"]:
        found.append(f"{page['broken']} of {page['images']} images did not decode")
    return found, page


def latest_demo_run() -> Path | None:
    runs = sorted((REPO / "demo_workspace" / "results").glob("run_*"))
    return runs[-1] if runs else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a results/run_<TS> dir (default: latest demo_workspace run)")
    parser.add_argument("--out", type=Path, default=Path("DEFT_Loop_Report.png"), help="screenshot path")
    parser.add_argument("--no-render", action="store_true", help="check the existing HTML, do not re-render it")
    parser.add_argument("--self-test", action="store_true", help="prove the check catches a broken page")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not args.chromium:
        print("chromium not found: install it (apt-get install -y chromium) or pass --chromium", file=sys.stderr)
        return 2

    if args.self_test:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "broken.html"
            page.write_text(BROKEN_PAGE)
            found, _ = check_page(args.chromium, page, None)
        kinds = {"console.error": False, "uncaught exception": False, "network request": False}
        for problem in found:
            for kind in kinds:
                kinds[kind] |= problem.startswith(kind)
        print("self-test:", "; ".join(f"{k}={'caught' if v else 'MISSED'}" for k, v in kinds.items()))
        return 0 if all(kinds.values()) else 1

    run = args.run or latest_demo_run()
    if run is None or not (run / "deft_state.json").is_file():
        print(f"no run to check ({run or 'demo_workspace/results/run_*'}): run `make demo` or pass --run",
              file=sys.stderr)
        return 2
    html = run / "DEFT_Loop_Report.html"
    if not args.no_render:
        sys.path.insert(0, str(REPO / "src"))
        from deft_aoi.report.render import render_report

        html = render_report(run)
    found, page = check_page(args.chromium, html, args.out)
    print(f"{html}: {page['sections']} sections, {page['svgs']} charts, {page['images']} images "
          f"({len(html.read_bytes()) / 1024:.0f} kB); run ended: {page['ended'] or '—'}; screenshot {args.out}")
    for problem in found:
        print(f"  problem: {problem}")
    print("OK: no console errors, no broken images, no network requests" if not found else f"{len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
