#!/usr/bin/env python3
"""The status page in a real browser: Debian's chromium, headless, driven by selenium through
chromedriver, against a seeded maskloss-server (tests/ui/seed.py).

usage: run.py --server BUILD/maskloss-server [--shots DIR] [--docs]

Checks that every figure the page shows (each element with data-figure) equals what the API
answers for it, formatted by the rules below (FORMATS: ui.js's FMT, written again here from
its description, not read from the page); that the drifting class is highlighted; that the
table sorts; that the chart's hover shows the points' values; that "Try it" shows an answer
and a refusal with its field marked; that the token prompt works on a server with tokens (a
token with monitor:read sees the monitors, one without gets the clear refusal); that no
JavaScript error reached the console or the page's banner; and that the page fits a phone's
width. Screenshots at 1280x900 and 390x844 go to --shots (default BUILD/ui-shots); --docs
copies the two of the README to docs/.
"""
import argparse
import base64
import datetime
import decimal
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, HERE)
from server import Server, recorded  # noqa: E402
import seed  # noqa: E402

# ---- the page's formatting rules (server/ui/ui.js FMT), independently --------------------


def fixed(x, digits):
    """Number.prototype.toFixed: the exact binary value rounded half away from zero (Python's
    own format rounds ties to even, and the histograms' quantiles often end in a 5)."""
    with decimal.localcontext() as ctx:
        ctx.rounding = decimal.ROUND_HALF_UP
        return format(decimal.Decimal(x), f".{digits}f")


def exponential(x, digits):
    """Number.prototype.toExponential ("1.235e-7", "1.235e+6")."""
    with decimal.localcontext() as ctx:
        ctx.rounding = decimal.ROUND_HALF_UP
        return format(decimal.Decimal(x), f".{digits}e")


def num(x, sig=4):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    if e < -4 or e >= 6:
        return exponential(x, sig - 1)
    return fixed(x, max(0, sig - 1 - e))


def integer(n):
    if n is None:
        return "—"
    if isinstance(n, str):
        return n
    return f"{round(n):,}"


def dur(x):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if x == 0:
        return "0 s"
    if x < 1e-3:
        return num(x * 1e6, 3) + " µs"
    if x < 1:
        return num(x * 1e3, 3) + " ms"
    if x < 60:
        return num(x, 3) + " s"
    if x < 3600:
        return num(x / 60, 3) + " min"
    if x < 86400:
        return num(x / 3600, 3) + " h"
    return num(x / 86400, 3) + " d"


def size(n):
    if n is None:
        return "—"
    units, v, i = ["B", "KiB", "MiB", "GiB", "TiB"], n, 0
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    return f"{fixed(v, 1)} {units[i]}" if i else integer(n) + " B"


def uptime(s):
    s = math.floor(s)
    d, h, m, sec = s // 86400, s % 86400 // 3600, s % 3600 // 60, s % 60
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {sec} s"
    return f"{sec} s"


def utc(t):
    if t is None:
        return "—"
    return datetime.datetime.fromtimestamp(math.floor(t * 1000) / 1000,
                                           datetime.timezone.utc).strftime("%Y-%m-%d %H:%M") + " UTC"


def distinct_classes(drift):
    return str(len({json.dumps(d["class"]) for d in drift})) if isinstance(drift, list) else "—"


def number_or(x, f):
    return f(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else num(x)


FORMATS = {
    "num": num,
    "int": integer,
    "dur": dur,
    "bytes": size,
    "uptime": lambda x: "—" if x is None else uptime(x),
    "time": utc,
    "signed": lambda x: number_or(x, lambda v: ("+" if v > 0 else "") + num(v)),
    "weight": lambda x: integer(x) if isinstance(x, (int, float)) and float(x).is_integer() else num(x),
    "z": lambda x: number_or(x, lambda v: ("+" if v > 0 else "") + fixed(v, 2)),
    "pct": lambda x: number_or(x, lambda v: fixed(v * 100, 1) + " %"),
    "rate": lambda x: number_or(x, lambda v: num(v, 3) + "/s"),
    "bool": lambda x: "yes" if x is True else "no" if x is False else "—",
    "text": lambda x: "—" if x is None else str(x),
    "classes": distinct_classes,
}

ARROWS = {"up": "↑", "down": "↓", "flat": "→", "none": "·"}


def trend(a, b):
    """The shortest window against the next (README-free rule of the page: 1 % either way)."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "none"
    if a > b * 1.01 and a - b > 1e-12:
        return "up"
    if a < b * 0.99 and b - a > 1e-12:
        return "down"
    return "flat"


def resolve(doc, path):
    for seg in path:
        if doc is None:
            return None
        if isinstance(seg, dict):
            doc = next((x for x in doc if all(x.get(k) == v for k, v in seg.items())), None) \
                if isinstance(doc, list) else None
        elif isinstance(doc, list):
            doc = doc[seg] if isinstance(seg, int) and seg < len(doc) else None
        else:
            doc = doc.get(seg)
    return doc


# ---- the browser --------------------------------------------------------------------------


class Failed(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    # --no-sandbox: CI and this test run as root, where chromium's sandbox refuses to start.
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-extensions", "--no-first-run", "--lang=en-US", "--force-color-profile=srgb",
              "--disable-features=Translate,MediaRouter,OptimizationHints",
              "--blink-settings=preferredColorScheme=1"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=opts)


class Page:
    def __init__(self, driver, base):
        self.d = driver
        self.base = base
        self.allowed_console = []  # substrings of console errors a step expects (a 401 it causes)

    def viewport(self, width, height):
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500})

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def wait(self, cond_js, what, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.js("return !!(" + cond_js + ")"):
                return
            time.sleep(0.05)
        raise Failed(f"timed out waiting for {what} ({cond_js}); banner: {self.banner()!r}")

    def open(self, frag, ready="document.body.hasAttribute('data-loaded')"):
        """Navigates to #frag and waits for the view's first load."""
        self.js("document.body.removeAttribute('data-loaded'); location.hash = arguments[0];", frag)
        self.wait(ready, f"{frag} to load")

    def banner(self):
        return self.js("const b = document.getElementById('banner');"
                       "return b && !b.hidden ? document.getElementById('banner-text').textContent : null")

    def figures(self):
        return self.js("""return Array.from(document.querySelectorAll('[data-figure]')).map(e => ({
            id: e.dataset.figure, src: e.dataset.src || null, path: e.dataset.path || null,
            format: e.dataset.format, text: e.textContent,
            value: 'value' in e.dataset ? e.dataset.value : null}))""")

    def console_errors(self):
        try:
            logs = self.d.get_log("browser")
        except Exception:  # a driver without the log endpoint: the banner check stays
            return []
        bad = []
        for e in logs:
            if e.get("level") not in ("SEVERE", "ERROR"):
                continue
            if any(s in e["message"] for s in self.allowed_console):
                continue
            bad.append(e["message"])
        return bad

    def screenshot(self, path, full=False):
        if full:
            w = self.js("return window.innerWidth")
            h = self.js("return document.documentElement.scrollHeight")
            r = self.d.execute_cdp_cmd("Page.captureScreenshot", {
                "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
            with open(path, "wb") as f:
                f.write(base64.b64decode(r["data"]))
        else:
            self.d.save_screenshot(path)
        print("screenshot", path)


def fetcher(base, token=None):
    def fetch(path):
        status, doc = seed.call(base, "GET", path, token=token)
        check(status == 200, f"GET {path}: HTTP {status} {doc}")
        return doc
    return fetch


# What each figure is, read from its id alone (never from the page's own data-path or
# data-format): (answer, path in it, format). An id the test does not know fails it.
STATS_FIELDS = {
    "version": (["version"], "text"), "build": (["build"], "text"), "started": (["started"], "time"),
    "ready": (["ready"], "bool"), "workers": (["workers"], "int"),
    "http_threads": (["http_threads"], "int"), "queued": (["queue", "queued"], "int"),
    "running": (["queue", "running"], "int"), "capacity": (["queue", "capacity"], "int"),
    "in_flight": (["in_flight"], "int"), "inflight_bytes": (["inflight_bytes"], "bytes"),
    "inflight_limit": (["inflight_limit"], "bytes"), "bytes_received": (["bytes_received"], "bytes"),
    "bytes_sent": (["bytes_sent"], "bytes"), "batch_entries": (["batch_entries"], "int"),
    "commits": (["state", "commits"], "int"), "state_observations": (["state", "observations"], "int"),
    "failures": (["state", "failures"], "int")}
WINDOW_FIELDS = {"loss": ("loss", "num"), "observations": ("observations", "int"),
                 "sum_weights": ("sum_weights", "weight"), "nonzero": ("num_nonzero_weights", "int"),
                 "samples": ("samples", "int")}
DERIVED = {"rps": "rate", "uptime": "uptime"}


def meaning(fig, fetch):
    """(src, path, format) of a figure, from its id; path None for the computed ones."""
    parts = fig["id"].split(":")
    if parts[0] == "stats":
        if parts[1] in DERIVED:
            return None, None, DERIVED[parts[1]]
        if parts[1] in STATS_FIELDS:
            return ("/v1/stats",) + STATS_FIELDS[parts[1]]
        if parts[1] == "elements":
            return "/v1/stats", ["elements", parts[2]], "int"
        if parts[1] == "queue_wait":
            return "/v1/stats", ["queue_wait", parts[2]], "int" if parts[2] == "count" else "dur"
        if parts[1] == "route":
            route, what = parts[2], parts[3:]
            p = ["routes", {"route": route}]
            if what == ["rps"]:
                return None, None, "rate"
            if what == ["requests"]:
                return "/v1/stats", p + ["requests"], "int"
            if what[0] == "code":
                return "/v1/stats", p + ["codes", what[1]], "int"
            return "/v1/stats", p + ["latency", what[0]], "dur"
    if parts[0] == "series":
        line, t, what = parts[1], int(parts[2]), parts[3]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(fig["src"]).query)
        check(query.get("slice") == (None if line == "all" else [line]),
              f"{fig['id']}: the line {line} is drawn from {fig['src']}")
        return fig["src"], ["points", {"t": t}, what], {"t": "time", "loss": "num", "observations": "int"}[what]
    if parts[0] == "monitor":
        name, what, rest = parts[1], parts[2], parts[3:]
        src = "/v1/monitors/" + urllib.parse.quote(name, safe="")

        def win(w):
            return ["total"] if w == "total" else ["windows", w]
        if what in WINDOW_FIELDS and len(rest) == 1:
            field, fmt = WINDOW_FIELDS[what]
            return src, win(rest[0]) + [field], fmt
        if what == "trend":
            return src, None, "trend"
        if what == "drift":
            return src, ["drift"], "classes"
        if what == "class":
            w, c, col = rest
            per = ["windows", w, "per_class", {"class": c}]
            if col in ("change", "z"):
                # The server's comparison, which every class of a window has (null without a
                # baseline), drifting or not.
                check(col in (resolve(fetch(src), per) or {}), f"{fig['id']}: the API gives class {c} no {col}")
                return src, per + [col], "signed" if col == "change" else "z"
            field, fmt = WINDOW_FIELDS[col]
            return src, per + [field], fmt
        if what == "slice":
            return src, ["slices", rest[0]] + win(rest[1]) + ["loss"], "num"
        if what == "labels":
            if rest in (["predictions"], ["positions"]):
                return src, ["labels", {"predictions": "predictions", "positions": "labelled_positions"}[rest[0]]], "int"
            if rest[0] == "class":
                return src, ["labels", "per_class", {"class": rest[1]}, rest[2]], \
                    "pct" if rest[2] == "fraction" else "int"
            w = rest[1]
            tail = ["total"] if w == "total" else ["windows", w]
            if rest[0] in ("predictions", "positions"):
                return src, ["labels", "coverage"] + tail + [
                    "predictions" if rest[0] == "predictions" else "labelled_positions"], "int"
            q = rest[0][len("delay_"):]
            return src, ["labels", "delay"] + tail + [q], "int" if q == "count" else "dur"
    raise Failed(f"a figure this test does not know: {fig['id']!r} (tests/ui/run.py meaning())")


def compare(page, fetch, volatile=lambda fig, path: False):
    """Every figure of the page against the API's answers; a list of mismatches."""
    figs = [f for f in page.figures() if not f["id"].startswith("try:")]
    docs, bad = {}, []

    def doc_of(src):
        if src not in docs:
            docs[src] = fetch(src)
        return docs[src]
    for f in figs:
        src, path, fmt = meaning(f, doc_of)
        if src is None:
            # Computed by the page (requests/s, uptime): its value is beside it, its text must
            # be that value formatted.
            v = None if f["value"] in (None, "") else float(f["value"])
            if FORMATS[fmt](v) != f["text"]:
                bad.append(f"{f['id']}: shows {f['text']!r}, its value {v} formats as {FORMATS[fmt](v)!r}")
            continue
        check(f["src"] == src, f"{f['id']} is read from {f['src']}, not {src}")
        doc = doc_of(src)
        if fmt == "trend":
            wins = doc["config"]["windows"]
            path = [["windows", wins[0], "loss"], ["windows", wins[1], "loss"] if len(wins) > 1 else ["total", "loss"]]
            want = ARROWS[trend(resolve(doc, path[0]), resolve(doc, path[1]))]
        else:
            want = FORMATS[fmt](resolve(doc, path))
        if want != f["text"] and not volatile(f, path):
            bad.append(f"{f['id']}: shows {f['text']!r}, the API's {src} {path} is {want!r}")
    return figs, docs, bad


def compare_settled(page, fetch, refresh, volatile=lambda fig, path: False):
    """compare(), once more after a refresh if a minute turned between the page's answers and
    ours (the windows move with the minute)."""
    figs, docs, bad = compare(page, fetch, volatile)
    if bad:
        refresh()
        figs, docs, bad = compare(page, fetch, volatile)
    check(not bad, "figures differ from the API's:\n  " + "\n  ".join(bad[:20]))
    return figs, docs


# ---- the steps ----------------------------------------------------------------------------


def step_monitors(page, fetch):
    page.open("#/")
    figs, docs = compare_settled(page, fetch, lambda: page.open("#/x") or page.open("#/"))
    ids = {f["id"] for f in figs}
    for name in ("movies", "recs", "latency"):
        for w in ("5m", "1h", "total"):
            check(f"monitor:{name}:loss:{w}" in ids, f"the list shows no {w} loss of {name}")
        check(f"monitor:{name}:trend" in ids and f"monitor:{name}:drift" in ids,
              f"the list shows no trend or drift count of {name}")
    movies = fetch("/v1/monitors/movies")
    check(movies["windows"]["5m"]["loss"] > movies["windows"]["1h"]["loss"] * 1.01,
          "seeding: movies' 5m loss is not above its 1h loss")
    arrow = page.js("return document.querySelector('[data-figure=\"monitor:movies:trend\"]').textContent")
    check(arrow == "↑", f"movies' trend arrow is {arrow!r}, not ↑ (its 5m loss is above the 1h)")
    drift = page.js("return document.querySelector('[data-figure=\"monitor:movies:drift\"]').textContent")
    check(drift == "1", f"movies' drift count shows {drift!r}, not 1 (horror)")
    return len(figs)


def step_monitor(page, fetch, shots):
    page.open("#/monitor/movies", "document.body.hasAttribute('data-loaded') && "
                                  "document.querySelectorAll('#chart-svg circle').length > 0")
    page.js("window.maskloss.setPaused(true)")

    def refresh():
        page.js("window.maskloss.setPaused(false)")
        page.open("#/x")
        page.open("#/monitor/movies", "document.querySelectorAll('#chart-svg circle').length > 0")
        page.js("window.maskloss.setPaused(true)")
    figs, docs = compare_settled(page, fetch, refresh)
    ids = {f["id"] for f in figs}
    doc = fetch("/v1/monitors/movies")
    check(doc["drift"] and {d["class"] for d in doc["drift"]} == {"horror"},
          f"seeding: the API lists {doc['drift']} as drifting, not horror alone")
    # Each class of the 5m window, each slice, each line's points.
    for c in seed.CLASSES:
        for col in ("loss", "sum_weights", "change", "z"):
            check(f"monitor:movies:class:5m:{c}:{col}" in ids, f"no {col} of class {c}")
    # The change and z-score of every class are filled in, not only the drifting one's: each
    # has a baseline in the 5m window (compare_settled checked the figures against the API).
    texts = {f["id"]: f["text"] for f in figs}
    for pc in doc["windows"]["5m"]["per_class"]:
        for col in ("change", "z"):
            check(isinstance(pc.get(col), (int, float)), f"seeding: class {pc['class']} has no 5m {col}")
            text = texts[f"monitor:movies:class:5m:{pc['class']}:{col}"]
            check(text != "—", f"class {pc['class']}'s {col} shows {text!r}, the API's is {pc[col]}")
    for k in doc["slices"]:
        check(f"monitor:movies:slice:{k}:5m" in ids, f"no 5m loss of slice {k}")
    series_srcs = [s for s in docs if "/series?" in s]
    check(len(series_srcs) == 1 + len(doc["slices"]), f"the chart drew {len(series_srcs)} lines, "
          f"not one for all and one per slice value ({len(doc['slices'])})")
    points = sum(len(docs[s]["points"]) for s in series_srcs)
    shown = page.js("return document.querySelectorAll('#chart-svg circle').length")
    check(points > 30 and shown == points, f"the chart shows {shown} points, the series hold {points}")
    # The drifting class is highlighted, and only it.
    rows = page.js("""return Array.from(document.querySelectorAll('#class-rows tr')).map(r =>
        [r.dataset.class, r.classList.contains('drift'), !!r.querySelector('.badge'),
         getComputedStyle(r.querySelector('td')).backgroundColor])""")
    check(len(rows) == len(seed.CLASSES), f"the class table has {len(rows)} rows")
    for cls, marked, badge, bg in rows:
        want = cls == "horror"
        check(marked == want and badge == want,
              f"class {cls}: highlighted {marked}, badge {badge}; drifting: {want}")
    bgs = {cls: bg for cls, _, _, bg in rows}
    check(bgs["horror"] != bgs["drama"], "the drifting row looks like the others")
    # Sorting, from the keyboard: the z-score header is a button.
    order = lambda: page.js("return Array.from(document.querySelectorAll('#class-rows tr')).map(r => r.dataset.class)")  # noqa: E731
    from selenium.webdriver.common.keys import Keys
    btn = page.d.find_element("css selector", "button[data-sort='loss']")
    btn.send_keys(Keys.ENTER)
    per = doc["windows"]["5m"]["per_class"]
    want = [c["class"] for c in sorted(per, key=lambda c: -c["loss"])]
    check(order()[0] == want[0] and page.js(
        "return document.querySelector('th[data-col=loss]').getAttribute('aria-sort')") == "descending",
        f"sorted by loss: {order()}, expected {want[0]} first")
    btn = page.d.find_element("css selector", "button[data-sort='loss']")
    btn.send_keys(Keys.ENTER)
    check(order()[-1] == want[0], f"sorted by loss ascending: {order()}")
    page.d.find_element("css selector", "button[data-sort='z']").send_keys(Keys.ENTER)
    check(order()[0] == "horror", f"sorted by z-score: {order()}, horror not first")
    focused = page.js("return document.activeElement && document.activeElement.dataset.sort")
    check(focused == "z", "the sort button lost the focus")
    # Hover values: the tooltip at a point shows its loss.
    from selenium.webdriver.common.action_chains import ActionChains
    circle = page.d.find_elements("css selector", "#chart-svg g[data-line='model_version=8'] circle")[-1]
    ActionChains(page.d).move_to_element(circle).perform()
    page.wait("!document.getElementById('chart-tip').hidden", "the chart's tooltip")
    tip = page.js("""const t = document.getElementById('chart-tip');
        return Array.from(t.querySelectorAll('[data-line]')).map(e => [e.dataset.line, e.querySelector('.v').textContent])""")
    t = int(circle.get_attribute("data-t"))
    line_src = next(s for s in series_srcs if "model_version%3D8" in s)
    want_v = num(resolve(docs[line_src], ["points", {"t": t}, "loss"]))
    check(["model_version=8", want_v] in tip, f"the tooltip at {t} shows {tip}, not {want_v} for version 8")
    # Keyboard on the chart: arrows move between points.
    page.d.find_element("css selector", "#chart-svg").send_keys(Keys.ARROW_LEFT)
    check(not page.js("return document.getElementById('chart-tip').hidden"), "the chart ignores the arrows")
    # Another step and range: the lines follow.
    from selenium.webdriver.support.ui import Select
    def six_hours():
        Select(page.d.find_element("id", "range")).select_by_value(str(6 * 3600))
        page.wait("document.querySelector('#chart-data [data-src*=\"step=300s\"]')", "the chart at a 5 min step")

    def refresh_six_hours():
        refresh()
        six_hours()
    six_hours()
    # (settled: the view's windows are those of the minute it was drawn in, and one may have
    # turned since; CI saw it)
    figs2, _ = compare_settled(page, fetch, refresh_six_hours)
    ActionChains(page.d).move_by_offset(0, 0).perform()
    page.d.find_element("css selector", "body").click()
    page.js("document.getElementById('chart-tip').hidden = true")
    Select(page.d.find_element("id", "range")).select_by_value("3600")
    page.wait("document.querySelector('#chart-data [data-src*=\"step=60s\"]')", "the chart at 1 min again")
    settle_for_screenshot(page)
    page.screenshot(os.path.join(shots, "monitor-desktop.png"))
    page.screenshot(os.path.join(shots, "monitor-desktop-full.png"), full=True)
    return len(figs) + len(figs2)


def settle_for_screenshot(page):
    """Refresh on, no focus ring, at the top, freshly loaded: the page as a person opens it."""
    page.js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    page.d.execute_async_script("window.maskloss.setPaused(false); window.maskloss.refresh().then(arguments[0])")


def step_labels(page, fetch):
    page.open("#/monitor/recs")
    page.js("window.maskloss.setPaused(true)")
    figs, _ = compare_settled(page, fetch, lambda: page.open("#/x") or page.open("#/monitor/recs"))
    ids = {f["id"] for f in figs}
    for w in ("5m", "1h", "total"):
        for what in ("predictions", "positions", "delay_p50", "delay_mean"):
            check(f"monitor:recs:labels:{what}:{w}" in ids, f"no label {what} for {w}")
    for c in seed.CLASSES:
        check(f"monitor:recs:labels:class:{c}:fraction" in ids, f"no labelled fraction of {c}")
    return len(figs)


def step_server(page, fetch, shots):
    page.js("window.maskloss.setPaused(false)")
    page.open("#/server", "document.querySelector('[data-figure=\"stats:rps\"]') && "
                          "document.querySelector('[data-figure=\"stats:rps\"]').dataset.value !== ''")
    # Paused, once the calls of the views before have all been answered, then one poll more
    # (a second after the last: a rate of its own): nothing but our own calls happens between
    # the page's answer and ours.
    page.js("window.maskloss.setPaused(true)")
    time.sleep(1.1)
    page.d.execute_async_script("window.maskloss.refresh().then(arguments[0])")

    # What moves with every request, the page's and ours: the bytes, the requests in flight,
    # and /v1/stats's own row. The rest must be equal.
    def volatile(f, path):
        return (path[:1] in (["bytes_received"], ["bytes_sent"], ["in_flight"]) or
                (len(path) > 1 and path[:2] == ["routes", {"route": "/v1/stats"}]))
    figs, docs = compare_settled(
        page, fetch, lambda: page.d.execute_async_script("window.maskloss.refresh().then(arguments[0])"),
        volatile)
    ids = {f["id"] for f in figs}
    st = docs["/v1/stats"]
    for r in st["routes"]:
        for q in ("requests", "p50", "p90", "p99"):
            check(f"stats:route:{r['route']}:{q}" in ids, f"no {q} of route {r['route']}")
        for code in r["codes"]:
            check(f"stats:route:{r['route']}:code:{code}" in ids, f"no count of {code} for {r['route']}")
    check(st["routes"] and any(r["route"] == "/v1/loss" and "422" in r["codes"] for r in st["routes"]),
          "seeding: no 422 from /v1/loss in /v1/stats")
    for loss in st["elements"]:
        check(f"stats:elements:{loss}" in ids, f"no element count for {loss}")
    for k in ("version", "build", "started", "workers", "http_threads", "capacity", "queued",
              "rps", "uptime", "commits"):
        check(f"stats:{k}" in ids, f"the server view shows no {k}")
    # requests/s is the page's own: (requests now - then) / (now - then) of two of its polls,
    # which it names; "now" is the figures it shows (their sum over the routes).
    rps, basis = page.js("const e = document.querySelector('[data-figure=\"stats:rps\"]');"
                         "return [e.dataset.value, e.dataset.basis]")
    before, after, t0, t1 = (float(x) for x in basis.split())
    shown = page.js("""return Array.from(document.querySelectorAll('[data-figure$=\":requests\"]'))
        .map(e => Number(e.textContent.replace(/,/g, '')))""")
    check(after == sum(shown) and before <= after and 1 <= t1 - t0 < 30 and t1 <= st["now"],
          f"requests/s from {basis}: not the requests shown ({sum(shown)}) or not two polls apart")
    check(math.isclose(float(rps), (after - before) / (t1 - t0), rel_tol=1e-12) and float(rps) > 0,
          f"requests/s {rps}, but ({after} - {before}) / ({t1} - {t0}) = {(after - before) / (t1 - t0)}")
    up = float(page.js("return document.querySelector('[data-figure=\"stats:uptime\"]').dataset.value"))
    check(abs(up - (st["now"] - st["started"])) < 30, f"uptime {up} against the API's {st['now'] - st['started']}")
    page.screenshot(os.path.join(shots, "server-desktop.png"))
    page.js("window.maskloss.setPaused(false)")
    return len(figs)


def step_try(page, note_loss):
    # The browser logs every 4xx answer: the two refusals asked for here are expected.
    page.allowed_console = ["/v1/loss - Failed to load resource: the server responded with a status of 422",
                            "/v1/loss - Failed to load resource: the server responded with a status of 400"]
    page.open("#/try")
    page.d.find_element("id", "try-send").click()
    page.wait("document.querySelector('[data-figure=\"try:loss\"]')", "the answer")
    shown = page.js("return document.querySelector('[data-figure=\"try:loss\"]').textContent")
    check(shown == note_loss, f"Try it shows loss {shown}, the note's example is {note_loss}")
    # A mistake: labels of 2 rows, logits of 3 -> shape_mismatch on field labels.
    page.d.find_element("id", "try-broken").click()
    page.d.find_element("id", "try-send").click()
    page.wait("document.getElementById('try-error')", "the refusal")
    code = page.js("return document.getElementById('try-error').dataset.code")
    field = page.js("const m = document.querySelector('[data-error-field]'); return m && m.dataset.errorField")
    marked = page.js("const m = document.querySelector('#try-request mark'); return m && m.dataset.errorKey")
    check(code == "shape_mismatch" and field == "labels" and marked == "labels",
          f"the refusal shows code {code!r}, field {field!r}, marked member {marked!r}")
    check(page.js("return getComputedStyle(document.querySelector('[data-error-field]')).outlineStyle") != "none",
          "the field is not highlighted")
    # Malformed JSON: the line is marked.
    area = page.d.find_element("id", "try-body")
    area.clear()
    area.send_keys('{"loss": "sigmoid_cross_entropy",\n "labels": [1, 0],,\n}')
    page.d.find_element("id", "try-send").click()
    page.wait("document.querySelector('#try-error[data-code=malformed_json]')", "the malformed_json refusal")
    line = page.js("const m = document.querySelector('[data-error-line]'); return m && m.dataset.errorLine")
    check(line == "2", f"malformed JSON: marked line {line!r}, the server says line 2")


def step_tokens(page, binary, state_dir, shots):
    """A second server with tokens: the prompt, a reader, and a token without monitor:read."""
    tokens = {"reader": "uitest-reader-" + "r" * 30, "evaluator": "uitest-eval-" + "e" * 30}
    auth = os.path.join(state_dir, "tokens")
    with open(auth, "w") as f:
        f.write("# tests/ui/run.py\n")
        f.write(hashlib.sha256(tokens["reader"].encode()).hexdigest() + " reader monitor:read,metrics\n")
        f.write(hashlib.sha256(tokens["evaluator"].encode()).hexdigest() + " evaluator evaluate\n")
    os.chmod(auth, 0o600)
    with Server(binary, "--auth-file", auth, "--state", os.path.join(state_dir, "tok.db")) as srv, \
            recorded(srv.port, 5) as rec:
        base = f"http://127.0.0.1:{srv.port}"
        page_base = f"http://127.0.0.1:{rec.port}"  # (the browser's exchanges checked, as in main)
        req = urllib.request.Request(base + "/v1/monitors/m1", method="PUT",
                                     data=json.dumps({"loss": "sigmoid_cross_entropy"}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10)
            raise Failed("a PUT without a token was accepted")
        except urllib.error.HTTPError as e:
            check(e.code == 401, f"PUT without token: {e.code}")
        page.allowed_console = ["status of 401", "status of 403"]
        page.d.get(page_base + "/#/")
        page.wait("document.querySelector('[data-state=token-needed]')", "the token prompt")
        page.d.find_element("id", "token-input").send_keys(tokens["reader"])
        page.d.find_element("css selector", "[data-state=token-needed] button[type=submit]").click()
        page.wait("document.querySelector('[data-state=empty]')", "the (empty) monitor list with the token")
        check(page.js("return sessionStorage.getItem('maskloss.token')") == tokens["reader"] and
              page.js("return localStorage.length") == 0, "the token is not kept in sessionStorage only")
        page.open("#/server", "document.querySelector('[data-figure=\"stats:version\"]')")
        page.js("window.maskloss.setPaused(true)")
        _, _, bad = compare(page, fetcher(base, tokens["reader"]),
                            lambda f, p: p[:1] in (["bytes_received"], ["bytes_sent"], ["in_flight"])
                            or p[:2] == ["routes", {"route": "/v1/stats"}] or f["src"] is None)
        check(not bad, "with a token: " + "; ".join(bad[:5]))
        page.js("window.maskloss.setPaused(false)")
        # A token without monitor:read: a clear refusal in place, not a broken page.
        page.d.find_element("id", "forget-token").click()
        page.open("#/", "document.querySelector('[data-state=token-needed]')")
        page.d.find_element("id", "token-input").send_keys(tokens["evaluator"])
        page.d.find_element("css selector", "[data-state=token-needed] button[type=submit]").click()
        page.wait("document.querySelector('[data-state=forbidden]')", "the refusal of the evaluator's token")
        text = page.js("return document.querySelector('[data-state=forbidden]').textContent")
        check("monitor:read" in text, f"the refusal does not say which scope: {text!r}")
        check(page.banner() is None, f"a refusal went to the error banner: {page.banner()!r}")
        page.screenshot(os.path.join(shots, "forbidden-desktop.png"))
        page.js("sessionStorage.clear()")
        errs = page.console_errors()
        page.allowed_console = []
        check(not errs, "console errors: " + "; ".join(errs[:5]))
        page.d.get("about:blank")
    print(f"    {rec.checked} exchanges of the browser's with the server with tokens checked against "
          "proto/openapi.json")


def step_phone(page, base, shots):
    page.viewport(390, 844)
    for frag, name in (("#/", "list"), ("#/monitor/movies", "monitor"), ("#/server", "server"),
                       ("#/try", "try")):
        page.open("#/x")
        page.open(frag)
        time.sleep(0.3)
        over = page.js("return document.documentElement.scrollWidth - window.innerWidth")
        check(over <= 1, f"{frag} at 390 px is {over} px wider than the screen")
        settle_for_screenshot(page)
        page.screenshot(os.path.join(shots, f"{name}-phone.png"))
    page.open("#/x")
    page.open("#/monitor/movies", "document.querySelectorAll('#chart-svg circle').length > 0")
    page.screenshot(os.path.join(shots, "monitor-phone-full.png"), full=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--shots")
    ap.add_argument("--docs", action="store_true", help="copy the README's screenshots to docs/")
    args = ap.parse_args()
    shots = args.shots or os.path.join(os.path.dirname(os.path.abspath(args.server)), "ui-shots")
    os.makedirs(shots, exist_ok=True)
    started = time.monotonic()
    with open(os.path.join(ROOT, "examples", "masked-mean.json")) as f:
        note = json.load(f)
    # The note's value (README "The note's masked example": TensorFlow's), not this server's.
    note_loss = "0.5375321135555567"
    check(note["loss"] == "sigmoid_cross_entropy", "examples/masked-mean.json changed")
    # Every exchange of the browser's goes through a relay and is checked against
    # proto/openapi.json when it ends (tests/e2e/server.py recorded); the test's own (seed, the
    # API's figures) go to the server directly.
    with tempfile.TemporaryDirectory() as tmp, \
            Server(args.server, "--state", os.path.join(tmp, "state.db")) as srv, \
            recorded(srv.port, 50) as rec:
        base = f"http://127.0.0.1:{srv.port}"
        page_base = f"http://127.0.0.1:{rec.port}"
        seed.seed(base)
        fetch = fetcher(base)
        driver = browser()
        try:
            page = Page(driver, page_base)
            page.viewport(1280, 900)
            driver.get(page_base + "/")
            page.wait("document.body.hasAttribute('data-loaded')", "the first view")
            n = 0
            steps = [("monitors", lambda: step_monitors(page, fetch)),
                     ("monitor", lambda: step_monitor(page, fetch, shots)),
                     ("labels", lambda: step_labels(page, fetch)),
                     ("server", lambda: step_server(page, fetch, shots)),
                     ("try", lambda: step_try(page, note_loss)),
                     ("phone", lambda: step_phone(page, base, shots))]
            for name, fn in steps:
                t0 = time.monotonic()
                if name == "monitors":
                    page.js("window.scrollTo(0, 0)")
                got = fn()
                n += got or 0
                check(page.banner() is None, f"{name}: the page shows an error: {page.banner()!r}")
                errs = page.console_errors()
                page.allowed_console = []
                check(not errs, f"{name}: console errors: " + "; ".join(errs[:5]))
                print(f"ok {name} ({time.monotonic() - t0:.1f} s{f', {got} figures' if got else ''})")
            page.viewport(1280, 900)
            page.open("#/x")
            page.open("#/")
            page.screenshot(os.path.join(shots, "list-desktop.png"))
            step_tokens(page, args.server, tmp, shots)
            print("ok tokens")
        except Exception:
            try:
                driver.save_screenshot(os.path.join(shots, "failure.png"))
                print("screenshot at the failure:", os.path.join(shots, "failure.png"))
            except Exception:
                pass
            raise
        finally:
            driver.quit()
    if args.docs:
        os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
        shutil.copyfile(os.path.join(shots, "monitor-desktop-full.png"), os.path.join(ROOT, "docs", "ui-desktop.png"))
        shutil.copyfile(os.path.join(shots, "monitor-phone.png"), os.path.join(ROOT, "docs", "ui-phone.png"))
        print("copied to docs/ui-desktop.png and docs/ui-phone.png")
    print(f"tests/ui: {n} figures equal the API's; {rec.checked} exchanges of the browser's checked "
          f"against proto/openapi.json; {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAIL tests/ui: {e}")
        sys.exit(1)
