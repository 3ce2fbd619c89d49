"""Load every page of the built site in headless Chromium and check what a reader would see.

Usage: python scripts/browser_test.py [_build/html]     (`make browser-test`, after `make book`)

Serves the site on 127.0.0.1 (a free port) and drives Debian's Chromium through its
chromedriver with Selenium (no browser download).  For every page:

- no failed request (network error or HTTP status >= 400) and no request leaving 127.0.0.1
  (the site must render offline);
- no console error;
- math rendered: once MathJax has finished, one MathJax output element per math element,
  and no MathJax error;
- every image loaded (naturalWidth > 0);
- static widget state (pages whose notebooks saved ipywidgets) rendered into visible widgets;
- notebook pages carry the Binder and Colab launch buttons;
and the search page returns results for a word every chapter uses.
Exit status 1 with a list of problems when anything fails.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download a driver

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]
SEARCH_WORD = "memory"

# Runs in the page: waits for MathJax (if the page loads it) and the images, then reports.
PAGE_REPORT_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const out = {};
  const mathEls = document.querySelectorAll('.math');
  out.math = mathEls.length;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  out.mathjax = !!(window.MathJax && MathJax.version);
  out.mjx = Array.from(mathEls).filter(e => e.querySelector('mjx-container')).length;
  out.mjxErrors = document.querySelectorAll('mjx-merror').length;
  const imgs = Array.from(document.images);
  for (const img of imgs) { img.loading = 'eager'; }
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(r => {
    img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000); })));
  out.images = imgs.length;
  out.badImages = imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  out.widgetState = document.querySelectorAll('script[type="application/vnd.jupyter.widget-state+json"]').length;
  out.notebook = !!document.querySelector('a[href$=".ipynb"][href*="_sources/"]');
  out.binder = document.querySelectorAll('a[href*="mybinder.org/v2/"]').length;
  out.colab = document.querySelectorAll('a[href*="colab.research.google.com/github/"]').length;
  out.widgetViews = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
  done(out);
})().catch(e => done({exception: String(e)}));
"""

WIDGETS_VISIBLE_JS = """
return Array.from(document.querySelectorAll('.jupyter-widgets, .widget-inline-hbox, .widget-box'))
  .filter(e => e.offsetWidth > 0 && e.offsetHeight > 0).length;
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output readable
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the browser moved on before a transfer ended (a broken pipe): not a site error
        super().handle_error(request, client_address)


def serve(root: Path) -> tuple[ThreadingHTTPServer, str]:
    httpd = _Server(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def browser(profile: str) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    # Chromium's own start-up page (chrome://new-tab-page...) makes requests of its own:
    # let it settle on about:blank and drop those log entries before testing the site.
    drv.get("about:blank")
    time.sleep(1.0)
    drv.get_log("performance")
    drv.get_log("browser")
    return drv


_REQUEST_URLS: dict[str, str] = {}


def network_problems(drv: webdriver.Chrome, base: str) -> list[str]:
    """Failed, erroring or off-site requests since the last call (from the performance log)."""
    host = urlsplit(base).netloc
    urls = _REQUEST_URLS
    out = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        method, p = msg.get("method"), msg.get("params", {})
        if str(p.get("documentURL", "")).startswith("chrome://"):
            continue  # the browser's own pages, not the site
        if method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != host:
                out.append(f"off-site request {url}")
        elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
            out.append(f"HTTP {p['response']['status']} {p['response']['url']}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"failed {urls.get(p['requestId'], p['requestId'])}: {p.get('errorText')}")
    return out


def console_errors(drv: webdriver.Chrome) -> list[str]:
    return [f"console {e['level']}: {e['message']}" for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def check_page(drv: webdriver.Chrome, base: str, rel: str) -> tuple[list[str], dict]:
    drv.get(base + rel)
    WebDriverWait(drv, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    rep = drv.execute_async_script(PAGE_REPORT_JS)
    problems = []
    if "exception" in rep:
        problems.append(f"page script failed: {rep['exception']}")
    else:
        if rep["math"] and not rep["mathjax"]:
            problems.append(f"{rep['math']} math elements but MathJax did not load")
        if rep["mjx"] < rep["math"]:
            problems.append(f"math not rendered: {rep['mjx']} MathJax outputs for {rep['math']} math elements")
        if rep["mjxErrors"]:
            problems.append(f"{rep['mjxErrors']} MathJax errors")
        problems += [f"image not loaded: {src}" for src in rep["badImages"]]
        if rep["notebook"] and not (rep["binder"] and rep["colab"]):
            problems.append(f"notebook page without launch buttons (Binder {rep['binder']}, Colab {rep['colab']})")
        if rep["widgetViews"]:
            try:
                WebDriverWait(drv, 20).until(lambda d: d.execute_script(WIDGETS_VISIBLE_JS) > 0)
                rep["widgetsVisible"] = drv.execute_script(WIDGETS_VISIBLE_JS)
            except Exception:  # noqa: BLE001 - reported as a problem below
                problems.append(f"{rep['widgetViews']} widget views saved but none rendered visibly")
    time.sleep(0.2)  # let late requests land in the log
    problems += network_problems(drv, base) + console_errors(drv)
    return problems, rep


def check_search(drv: webdriver.Chrome, base: str) -> tuple[list[str], int]:
    drv.get(base + f"search.html?q={SEARCH_WORD}")
    try:
        WebDriverWait(drv, 30).until(lambda d: d.execute_script(
            "return document.querySelectorAll('#search-results ul.search li').length") > 0)
    except Exception:  # noqa: BLE001
        return [f"search for '{SEARCH_WORD}' returned no result"], 0
    n = drv.execute_script("return document.querySelectorAll('#search-results ul.search li').length")
    return network_problems(drv, base) + console_errors(drv), n


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    root = Path(argv[0] if argv else "_build/html").resolve()
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html") if not {"_sources", "_static"} & set(p.parts))
    if not pages:
        print(f"browser_test: no page under {root}: run `make book` first")
        return 1
    httpd, base = serve(root)
    failures = 0
    totals = {"math": 0, "mjx": 0, "images": 0, "widgetViews": 0}
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        drv = browser(profile)
        try:
            version = drv.capabilities.get("browserVersion", "?")
            print(f"browser_test: Chromium {version}, {len(pages)} pages from {base}")
            for rel in pages:
                problems, rep = check_page(drv, base, rel)
                for k in totals:
                    totals[k] += rep.get(k, 0)
                status = "ok  " if not problems else "FAIL"
                print(f"  {status} {rel}  (math {rep.get('mjx', 0)}/{rep.get('math', 0)}, "
                      f"images {rep.get('images', 0)}, widget views {rep.get('widgetViews', 0)}"
                      + (", launch: Binder + Colab" if rep.get("notebook") and rep.get("binder") and rep.get("colab") else "")
                      + ")")
                for p in problems:
                    print(f"       {p}")
                failures += bool(problems)
            problems, n = check_search(drv, base)
            print(f"  {'ok  ' if not problems else 'FAIL'} search.html?q={SEARCH_WORD}  ({n} results)")
            for p in problems:
                print(f"       {p}")
            failures += bool(problems)
        finally:
            drv.quit()
            httpd.shutdown()
    passed = len(pages) + 1 - failures
    print(f"browser_test: math elements rendered {totals['mjx']}/{totals['math']}, images {totals['images']}, "
          f"widget views {totals['widgetViews']}, {time.perf_counter() - t0:.1f} s")
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
