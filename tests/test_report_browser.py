"""The HTML report and the index of runs in a real headless Chromium (Debian's chromium package).

Chromium is driven over the DevTools protocol (websocket-client): every console message,
JavaScript exception, log entry and network request of the page is recorded, the DOM is
queried for the verdict, the tables, the thumbnails (decoded, 64 px) and the index's links
(each resolves to a file), and a 1280x2000 screenshot is checked. A first test
proves the harness does catch console errors and network requests on a deliberately bad page.
Missing chromium fails these tests (CI installs it; see .ci/run), it does not skip them.
"""

import base64
import dataclasses
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest
import websocket
from PIL import Image

from pipeline.report import html
from tests.test_report import _report

pytestmark = pytest.mark.browser
WIDTH, HEIGHT = 1280, 2000


@dataclasses.dataclass
class Page:
    problems: list[str]  # console errors/warnings, exceptions, error log entries, failed loads
    requests: list[str]  # every URL the page asked for
    dom: dict
    screenshot: bytes


class Chromium:
    """A headless Chromium with one page, driven over the DevTools protocol."""

    FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync")

    def __init__(self, binary: str):
        self._user_dir = tempfile.mkdtemp(prefix="chromium-")
        self._process = subprocess.Popen(
            [binary, *self.FLAGS, f"--user-data-dir={self._user_dir}", "--remote-debugging-port=0",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = os.path.join(self._user_dir, "DevToolsActivePort")  # Chromium writes its port here
        deadline = time.monotonic() + 60
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            target = next(t for t in json.load(response) if t["type"] == "page")
        self._ws = websocket.create_connection(target["webSocketDebuggerUrl"], suppress_origin=True, timeout=60)
        self._next_id = 0
        self._events: list[dict] = []

    def _call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    def load(self, path: str, dom_script: str) -> Page:
        """Opens a file, waits for its load event, and returns what happened."""
        self._events.clear()
        for domain in ("Runtime", "Log", "Network", "Page"):
            self._call(f"{domain}.enable")
        self._call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        self._call("Page.navigate", url="file://" + os.path.abspath(path))
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            assert time.monotonic() < deadline, "the page did not finish loading"
            self._events.append(json.loads(self._ws.recv()))
        self._call("Runtime.evaluate", expression="new Promise(r => setTimeout(r, 300))", awaitPromise=True)
        dom = json.loads(self._call("Runtime.evaluate", expression=dom_script, returnByValue=True)["result"]["value"])
        shot = base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"])
        problems, requests = [], []
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                problems.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
            elif method == "Runtime.exceptionThrown":
                problems.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                problems.append(f"log {params['entry']['level']}: {params['entry']['text']}")
            elif method == "Network.loadingFailed":
                problems.append(f"load failed: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                requests.append(params["request"]["url"])
        return Page(problems, requests, dom, shot)

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001,S110  (already closed or never opened)
            pass
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
        shutil.rmtree(self._user_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium():
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    browser = Chromium(binary)
    yield browser
    browser.close()


DOM = """JSON.stringify((() => {
  const verdict = document.getElementById('verdict');
  const box = verdict ? verdict.getBoundingClientRect() : null;
  const tables = [...document.querySelectorAll('table')];
  const sliceHeading = [...document.querySelectorAll('h2')].find(h => h.textContent === 'Labels x slices');
  const sliceTable = sliceHeading ? [...tables].find(t => t.compareDocumentPosition(sliceHeading) & 2) : null;
  return {
    verdict: verdict ? verdict.innerText : null,
    verdictBox: box ? [box.top, box.height, box.width] : null,
    gateRows: tables.length ? tables[0].querySelectorAll('tbody tr').length : 0,
    tables: tables.length,
    sliceTableTop: sliceTable ? sliceTable.getBoundingClientRect().top : null,
    sliceTableText: sliceTable ? sliceTable.innerText : '',
    svgs: [...document.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 100).length,
  };
})())"""


def _check_screenshot(png: bytes, verdict_color: tuple[int, int, int]) -> Image.Image:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 200, "the screenshot is (nearly) blank"
    assert any(rgb == verdict_color and count > 5000 for count, rgb in colors), "no verdict box in the screenshot"
    return image


def test_harness_catches_console_errors_and_network_requests(chromium, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p id='verdict'>x</p><script>console.error('boom'); missing();</script>"
                   "<img src='http://127.0.0.1:9/logo.png'></body></html>")
    page = chromium.load(str(bad), DOM)
    assert any("boom" in p for p in page.problems), page.problems
    assert any(p.startswith("exception") for p in page.problems), page.problems
    assert "http://127.0.0.1:9/logo.png" in page.requests


def _assert_clean(page: Page, path: str) -> None:
    assert page.problems == []
    assert page.requests[0] == "file://" + os.path.abspath(path)
    # Nothing else fetched: only the thumbnails, which are data: URIs inside the page.
    assert all(url.startswith("data:image/jpeg;base64,") for url in page.requests[1:]), page.requests[1:5]


IMAGES = """JSON.stringify((() => {
  const images = [...document.querySelectorAll('img')];
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return {
    images: images.length,
    rendered: images.filter(i => i.complete && i.naturalWidth === 64 && i.width === 64).length,
    sources: [...new Set(images.map(i => i.src.slice(0, 23)))],
    links: links,
    rows: [...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.run),
    svgs: [...document.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 100).length,
    text: document.body.innerText,
  };
})())"""


def test_rendered_report_opens_cleanly(chromium, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(html.render_html(_report(pushed=False)))
    page = chromium.load(str(path), DOM)
    _assert_clean(page, str(path))
    assert page.dom["verdict"].startswith("NOT PUSHED") and page.dom["gateRows"] == 4
    _check_screenshot(page.screenshot, (255, 235, 233))  # the red verdict box


def test_thumbnails_render_and_hostile_file_names_stay_text(chromium, tmp_path):
    from tests.test_report_evidence import HOSTILE, evidence_report

    path = tmp_path / "report.html"
    path.write_text(html.render_html(evidence_report()))
    page = chromium.load(str(path), IMAGES)
    _assert_clean(page, str(path))
    assert page.dom["images"] == 18 and page.dom["rendered"] == 18
    assert page.dom["sources"] == ["data:image/jpeg;base64,"]
    assert HOSTILE in page.dom["text"]  # shown as text; an <img onerror> would have been an 19th image


@pytest.mark.e2e
def test_index_links_resolve_and_the_reports_thumbnails_render(chromium, e2e_runs, tmp_path):
    import urllib.parse

    from pipeline import mlmd

    config, _, first, second, store = e2e_runs
    index_path = os.path.join(config.pipeline_root, "reports", "index.html")
    page = chromium.load(index_path, IMAGES)
    _assert_clean(page, index_path)
    dom = page.dom
    ids = mlmd.run_ids(store, config.pipeline_name)  # three runs, or more if a test added some
    assert len(ids) >= 3 and dom["rows"] == ids[::-1] and dom["rows"][-2:] == [second["run_id"], first["run_id"]]
    assert dom["svgs"] == 1 and "not blessed" in dom["text"] and "failed gate: macro_auc_floor" in dom["text"]
    assert len(dom["links"]) == len(ids)
    for link in dom["links"]:
        assert link.startswith("file://") and os.path.exists(urllib.parse.unquote(link[len("file://"):])), link
    first_link = next(link for link in dom["links"] if first["run_id"] in urllib.parse.unquote(link))
    report_path = urllib.parse.unquote(first_link[len("file://"):])
    report = chromium.load(report_path, IMAGES)
    _assert_clean(report, report_path)
    assert report.dom["images"] > 0 and report.dom["rendered"] == report.dom["images"]
    assert "Decision thresholds and calibration" in report.dom["text"] and "95% interval" in report.dom["text"]
    image = _check_screenshot(chromium.load(report_path, DOM).screenshot, (218, 251, 225))
    image.save(tmp_path / "report.png")


@pytest.mark.e2e
def test_real_report_shows_verdict_and_tables(chromium, e2e_runs, tmp_path):
    from components.base import labels

    _, _, first, _, _ = e2e_runs
    page = chromium.load(first["report"], DOM)
    _assert_clean(page, first["report"])
    dom = page.dom
    assert dom["verdict"].startswith("PUSHED")
    top, height, width = dom["verdictBox"]
    assert 0 < top < 400 and height > 20 and width > 600  # first thing on the page, in view
    assert dom["gateRows"] == 5 and dom["tables"] > 10 and dom["svgs"] == 3
    assert dom["sliceTableTop"] is not None and dom["sliceTableTop"] < HEIGHT  # in the screenshot
    for name in (*labels.LABEL_NAMES, "race=white", "gender=female, race=asian", "age=60+"):
        assert name in dom["sliceTableText"], name
    image = _check_screenshot(page.screenshot, (218, 251, 225))  # the green verdict box
    image.save(tmp_path / "report.png")
