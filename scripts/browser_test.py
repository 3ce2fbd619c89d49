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
- launch buttons and repository links follow the one setting, repository.url in _config.yml:
  with it set, notebook pages carry the Binder and Colab buttons; with it empty, no page has a
  launch button; no page anywhere mentions the REPLACE-ME placeholder;
and the search page returns results for a word every chapter uses.

The live calculator (chapters/part1-stage-memory/live-calculator.html) is then tested in a
fresh browser profile: it must start offline and print its first result (the time from
navigation start is printed; target 5 s), then >= 20 scenarios are driven through its controls
and every one's JSON, as the page shows it, must equal ``python -m vramlib estimate ... --json``
byte for byte (the command the page prints), and its fit verdict and largest batch/context
must equal the same bridge run in CPython; bad input must show the estimator's own message
next to the field (and the CLI's, where the CLI reaches the estimator), never a blank page or
NaN.  Each recompute's time is printed (target 100 ms).
Options: --screenshot PNG saves the calculator with its default (7B LoRA fine-tuning) scenario.
Exit status 1 with a list of problems when anything fails.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import statistics
import subprocess
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from colab_setup import repository_url  # noqa: E402

CALCULATOR = "chapters/part1-stage-memory/live-calculator.html"
REPO_URL = repository_url(ROOT)
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
  out.repoButtons = document.querySelectorAll(
    '.btn-source-repository-button, .btn-source-edit-button, .btn-source-issues-button').length;
  out.placeholder = document.documentElement.outerHTML.includes('REPLACE-ME');
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
        if REPO_URL and rep["notebook"] and not (rep["binder"] and rep["colab"]):
            problems.append(f"notebook page without launch buttons (Binder {rep['binder']}, Colab {rep['colab']})")
        if not REPO_URL and (rep["binder"] or rep["colab"] or rep["repoButtons"]):
            problems.append("launch buttons or repository links, but no repository is configured "
                            "(repository.url in _config.yml)")
        if rep["placeholder"]:
            problems.append("the page mentions the REPLACE-ME placeholder repository")
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


# ---------------------------------------------------------------- the live calculator
#: Scenarios driven through the calculator's controls, each from the page's defaults
#: (a 7B LoRA fine-tune on an H100): field -> value, as a reader would set them.
TINY_LLAMA = json.dumps({"model_type": "llama", "hidden_size": 512, "num_hidden_layers": 4,
                         "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 1376,
                         "vocab_size": 32000, "max_position_embeddings": 4096}, indent=2)
TINY_GPT2 = json.dumps({"model_type": "gpt2", "n_embd": 256, "n_layer": 4, "n_head": 4, "vocab_size": 5000,
                        "n_positions": 512})
SCENARIOS: list[dict] = [
    {},
    {"stage": "pretrain", "model": "llama-3.2-1b", "batch": "8", "seq": "1024", "checkpointing": "none"},
    {"stage": "pretrain", "model": "gpt2", "dtype": "fp32", "autocast": "bf16", "seq": "1024", "batch": "16"},
    {"stage": "pretrain", "model": "llama-3-8b", "dtype": "fp16", "master_weights": True, "optimizer": "adam",
     "gpus": "8", "zero": "3"},
    {"stage": "pretrain", "model": "llama-3-70b", "gpus": "64", "tp": "8", "pp": "4", "zero": "1",
     "grad_accum": "8", "gpu": "h200-sxm"},
    {"model": "mistral-7b", "trainable": "qlora", "lora_rank": "64", "lora_targets": "attn"},
    {"model": "qwen2.5-7b", "lora_rank": "8", "lora_targets": "q,v", "checkpointing": "selective"},
    {"model": "llama-3-8b", "trainable": "last-k", "last_k": "4", "batch": "2"},
    {"model": "phi-3-mini", "trainable": "all", "optimizer": "adam8bit", "batch": "1"},
    {"stage": "pretrain", "model": "pythia-1.4b", "optimizer": "adafactor", "attention": "eager", "batch": "2"},
    {"model": "gemma-2b", "keep_logits": True, "batch": "2", "seq": "4096"},
    {"stage": "pretrain", "model": "tinyllama-1.1b", "optimizer": "momentum", "grad_accum": "4",
     "gpu": "a100-sxm4-40gb"},
    {"stage": "pretrain", "model": "smollm2-135m", "dtype": "fp32", "autocast": "fp16", "attention": "flash",
     "gpu": "t4"},
    {"stage": "pretrain", "model": "llama-2-13b", "gpus": "4", "zero": "2", "gpu": "a100-sxm4-80gb"},
    {"stage": "generate", "model": "llama-3-8b", "batch": "8", "prompt": "1024", "new_tokens": "256"},
    {"stage": "generate", "model": "llama-3-70b", "weights": "int4", "group_size": "128", "tp": "2",
     "gpu": "h200-sxm"},
    {"stage": "generate", "model": "mixtral-8x7b", "weights": "nf4", "kv_dtype": "fp8", "cache": "static"},
    {"stage": "generate", "model": "mistral-7b", "weights": "fp8", "kv_dtype": "fp8", "attention": "eager",
     "batch": "1", "prompt": "2048"},
    {"stage": "generate", "model": "gpt2", "weights": "fp32", "full_logits": True, "prompt": "900",
     "new_tokens": "100", "gpu": "rtx-4090"},
    {"stage": "generate", "model": "qwen2-0.5b", "weights": "int8", "batch": "64", "tp": "2", "gpu": "l4"},
    {"stage": "generate", "model": "gemma-2-9b", "pp": "2", "prompt": "4096", "batch": "1"},
    {"stage": "generate", "model": "qwen2-0.5b", "weights": "int8", "quant_library": "torchao", "batch": "8",
     "gpu": "h200-sxm"},
    {"stage": "generate", "model": "llama-3.2-1b", "weights": "nf4", "quant_library": "bitsandbytes"},
    {"model": "custom", "config": TINY_LLAMA, "lora_rank": "4"},
    {"model": "custom", "config": TINY_GPT2, "stage": "generate", "prompt": "256", "new_tokens": "64"},
]
#: Bad input: field -> value, the field that must show the message, and whether the CLI
#: reaches the estimator with it (argparse itself rejects "2.5" for an integer option).
BAD: list[tuple[dict, str, bool]] = [
    ({"batch": "-1"}, "batch", True),
    ({"batch": "2.5"}, "batch", False),
    ({"stage": "generate", "tp": "3"}, "tp", True),
    ({"model": "custom", "config": '{"model_type": "llama", "hidden_size": 64,'}, "config", True),
    ({"model": "custom", "config": '{"model_type": "llama"}'}, "config", True),
    ({"autocast": "bf16"}, "autocast", True),
    ({"model": "gpt2", "seq": "5000"}, "seq", True),
    ({"stage": "pretrain", "gpus": "3", "tp": "2"}, "gpus", True),
    ({"lora_rank": ""}, "lora_rank", False),
    ({"stage": "generate", "weights": "nf4", "quant_library": "torchao"}, "quant_library", True),
]

DRIVE_JS = """
const [changes] = arguments;
const T = window.vramlibCalculator;
document.querySelector('#vramlib-calculator .vc-reset').click();
const n0 = T.computeMs.length;
for (const [name, value] of changes) {
  const c = document.getElementById('vc-' + name);
  if (c.type === 'checkbox') { c.checked = !!value; c.dispatchEvent(new Event('change', {bubbles: true})); }
  else if (c.tagName === 'SELECT') { c.value = value; c.dispatchEvent(new Event('change', {bubbles: true})); }
  else { c.value = value; c.dispatchEvent(new Event('input', {bubbles: true})); }
}
const errors = {};
document.querySelectorAll('#vramlib-calculator .vc-error').forEach(e => {
  if (e.textContent && !e.closest('.vc-field').hidden) errors[e.id.slice('vc-error-'.length)] = e.textContent; });
const banner = document.querySelector('#vramlib-calculator .vc-banner');
const q = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
return {ok: T.lastResult.ok, result: T.lastResult, state: T.state, json: q('vc-json'), command: q('vc-command'),
        errors, banner: banner.hidden ? '' : banner.textContent, hash: location.hash,
        text: document.getElementById('vramlib-calculator').innerText, ms: T.computeMs.slice(n0)};
"""


def load_bridge():
    """The page's bridge (_assets/calculator/calculator.py) in this CPython, for comparison."""
    spec = importlib.util.spec_from_file_location("calculator_bridge", ROOT / "_assets" / "calculator" / "calculator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_cli(argv: list[str], config: str | None, cwd: str) -> subprocess.CompletedProcess:
    """``python -m vramlib ARGV`` in ``cwd``, with a pasted config written where the page names it."""
    if config is not None:
        p = Path(cwd) / "my-model" / "config.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(config)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "vramlib", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def browser_cpu_s(drv: webdriver.Chrome) -> float:
    """CPU seconds used so far by the browser's processes (chromedriver and all below it): the
    load's cost independent of how busy the machine is."""
    import psutil

    top = psutil.Process(drv.service.process.pid)
    total = 0.0
    for p in [top, *top.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def wait_ready(drv: webdriver.Chrome, timeout: float = 60.0) -> dict:
    WebDriverWait(drv, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(
        "const T = window.vramlibCalculator; return T && (T.ready || T.failed);"))
    return drv.execute_script("const T = window.vramlibCalculator; "
                              "return {ready: T.ready, failed: T.failed, timings: T.timings, versions: T.versions};")


def check_calculator(base: str, screenshot: str | None) -> int:
    """The live calculator: start-up time, parity with the CLI over SCENARIOS, bad input."""
    failures = 0

    def report(ok: bool, what: str, details: list[str] = ()) -> None:
        nonlocal failures
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        for d in details:
            print(f"       {d}")
        failures += not ok

    bridge = load_bridge()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, \
            tempfile.TemporaryDirectory(prefix="calculator-cli-") as cwd:

        def in_cpython(state: dict) -> dict:
            """The bridge's result for ``state`` here (it writes a pasted config under its cwd)."""
            here = os.getcwd()
            os.chdir(cwd)
            try:
                return json.loads(bridge.compute(json.dumps(state)))
            finally:
                os.chdir(here)

        drv = browser(profile)  # a fresh profile: nothing cached, as on a reader's first visit
        try:
            cpu0 = browser_cpu_s(drv)
            drv.get(base + CALCULATOR)
            st = wait_ready(drv)
            cpu = browser_cpu_s(drv) - cpu0
            problems = network_problems(drv, base) + console_errors(drv)
            if st["failed"]:
                problems.insert(0, f"did not start: {st['failed']}")
            t = st["timings"] or {}
            if t.get("snapshot_error"):   # the page fell back to a plain start: say why
                problems.append(f"the memory snapshot was not used: {t['snapshot_error']}")
            report(not problems and st["ready"],
                   f"{CALCULATOR}: first result {t.get('first_result_ms', 0) / 1000:.2f} s after navigation "
                   f"start{' (OVER the 5 s target)' if t.get('first_result_ms', 0) > 5000 else ''} "
                   f"({'from the memory snapshot' if t.get('snapshot') else 'plain start'}; load event {t.get('load_event_ms', 0) / 1000:.2f} s; Pyodide "
                   f"{t.get('pyodide_ms', 0) / 1000:.2f} s, wheel + bridge {t.get('install_ms', 0) / 1000:.2f} s, "
                   f"first estimate {t.get('first_compute_ms', 0):.0f} ms), fresh profile, browser CPU "
                   f"{cpu:.1f} s, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
                   f"{st.get('versions')}", problems)
            if not st["ready"]:
                return failures
            if screenshot:
                drv.set_window_size(1280, 1700)
                drv.save_screenshot(screenshot)
                print(f"       screenshot of the default scenario: {screenshot}")
            ms: list[float] = []
            passed = 0
            for i, sc in enumerate(SCENARIOS):
                r = drv.execute_script(DRIVE_JS, list(sc.items()))
                ms += r["ms"]
                probs = []
                if not r["ok"]:
                    probs.append(f"the page rejects it: {r['result']['errors']}")
                else:
                    cli = run_cli(r["result"]["argv"], sc.get("config"), cwd)
                    if cli.returncode:
                        probs.append(f"CLI failed: {cli.stderr.strip()}")
                    elif cli.stdout.rstrip("\n") != r["json"]:
                        probs.append(f"page JSON differs from `{r['command']}`")
                    here = in_cpython(r["state"])
                    for k in ("fits", "margin", "max_batch", "max_context", "gpu", "breakdown"):
                        if here.get(k) != r["result"].get(k):
                            probs.append(f"{k}: page {r['result'].get(k)} vs CPython {here.get(k)}")
                if "NaN" in r["text"] or "undefined" in r["text"]:
                    probs.append("the page shows NaN or undefined")
                passed += not probs
                b = r["result"].get("breakdown", {})
                report(not probs, f"scenario {i + 1:2d}: {r['command'] or '?'}  "
                       f"-> {b.get('total_reserved', 0) / 2**30:.2f} GiB, fits {r['result'].get('fits')}, "
                       f"batch<={r['result'].get('max_batch', {}).get('value')}, "
                       f"len<={r['result'].get('max_context', {}).get('value')}", probs)
            for changes, field, via_cli in BAD:
                r = drv.execute_script(DRIVE_JS, list(changes.items()))
                ms += r["ms"]
                probs = []
                msg = r["errors"].get(field)
                if r["ok"] or not msg:
                    probs.append(f"no message next to '{field}' (errors {r['errors']}, banner {r['banner']!r})")
                elif via_cli:
                    cli = run_cli(r["result"].get("argv") or bridge.cli_argv(bridge.effective(r["state"])),
                                  changes.get("config"), cwd)
                    if cli.returncode != 2 or cli.stderr.strip() != f"vramlib: error: {msg}":
                        probs.append(f"CLI says {cli.stderr.strip()!r}, the page {msg!r}")
                else:
                    here = in_cpython(r["state"])
                    if here["errors"][0]["message"] != msg:
                        probs.append(f"CPython says {here['errors'][0]['message']!r}, the page {msg!r}")
                if not r["banner"] or not r["text"].strip() or "NaN" in r["text"]:
                    probs.append("blank result, no banner, or NaN")
                report(not probs, f"bad input {changes}: next to '{field}': {msg!r}", probs)
            # the scenario in the URL: a fresh load of the page at a scenario's address shows the same
            r = drv.execute_script(DRIVE_JS, list(SCENARIOS[5].items()))
            drv.get("about:blank")
            drv.get(base + CALCULATOR + r["hash"])
            st = wait_ready(drv)
            again = drv.execute_script("return document.getElementById('vc-json').textContent;")
            report(st["ready"] and again == r["json"], f"scenario from the URL {r['hash'][:60]}...: same result "
                   f"after a reload (warm start: first result {st['timings']['first_result_ms'] / 1000:.2f} s)")
            problems = network_problems(drv, base) + console_errors(drv)
            report(not problems, "no failed or off-site request, no console error while driving it", problems)
            med, worst = statistics.median(ms), max(ms)
            print(f"  {'ok  ' if worst <= 100 else 'SLOW'} recompute (estimate + largest batch and context + "
                  f"drawing), {len(ms)} control changes: median {med:.0f} ms, max {worst:.0f} ms (target 100 ms)")
            print(f"  parity: {passed}/{len(SCENARIOS)} scenarios byte for byte equal to `vramlib estimate --json`")
        finally:
            drv.quit()
    return failures


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    screenshot = None
    if "--screenshot" in argv:
        i = argv.index("--screenshot")
        screenshot = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
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
        calc_failures = check_calculator(base, screenshot) if (root / CALCULATOR).exists() else 1
        if not (root / CALCULATOR).exists():
            print(f"  FAIL {CALCULATOR} is missing")
        httpd.shutdown()
    passed = len(pages) + 1 - failures
    print(f"browser_test: math elements rendered {totals['mjx']}/{totals['math']}, images {totals['images']}, "
          f"widget views {totals['widgetViews']}, {time.perf_counter() - t0:.1f} s")
    print(f"{passed} passed, {failures} failed; live calculator: {calc_failures} failed")
    return 1 if failures or calc_failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
