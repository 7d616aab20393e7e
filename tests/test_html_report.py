"""The HTML load-test report: content, escaping, robustness, and real rendering in Chromium.

The Chromium tests need Debian's ``chromium`` on PATH (``apt-get install -y chromium``)
and are skipped without it. They check the page the way a person sees it:

* ``--dump-dom`` of a copy of the page with a small probe script appended (the
  report itself has no script). After layout, the probe writes each plot's
  on-page box (``getBoundingClientRect``) and each line's rendered geometry
  (``getBBox``, ``getTotalLength``) into ``data-probe`` on ``<body>``: non-zero
  numbers there prove Chromium parsed the SVG and laid the lines out.
* ``--screenshot`` of the same page at the same window size, decoded here with
  zlib and struct (no Pillow), and inside each plot's box from the probe,
  counted: pixels in a series colour (saturated; gridlines, axes and text are
  grey) must be many and spread across most of the plot's width, so each chart
  visibly draws lines over the whole run. Both runs are deterministic: a local
  file, fixed window, device scale 1, no animation, no network.

Run as a script to regenerate the screenshot in the docs:
``python tests/test_html_report.py docs/load-report.png``.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from supervisor.loadtest.html import render_html

FIXTURE = Path(__file__).parent / "fixtures" / "sample_report.json"
CHROMIUM = shutil.which("chromium")
WINDOW = (1280, 2400)
PLOTS = ("sessions", "throughput", "latency")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium on PATH: apt-get install -y chromium")

PROBE = """<script>
(() => {
  const plots = {};
  for (const svg of document.querySelectorAll("svg.plot")) {
    const box = svg.getBoundingClientRect();
    const lines = {};
    for (const path of svg.querySelectorAll("path.series")) {
      const b = path.getBBox();
      lines[path.dataset.series] = {w: b.width, h: b.height, length: path.getTotalLength()};
    }
    plots[svg.dataset.plot] = {x: box.left + scrollX, y: box.top + scrollY, w: box.width,
                               h: box.height, lines};
  }
  document.body.dataset.probe = JSON.stringify(
    {plots, page_height: document.documentElement.scrollHeight});
})();
</script>"""


def _sample() -> dict[str, Any]:
    report: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return report


def _paths(page: str, plot: str) -> dict[str, str]:
    """Each series of one plot: its label and its ``d`` attribute."""
    svg = re.search(rf'<svg class="plot" data-plot="{plot}".*?</svg>', page, re.S)
    assert svg, f"no {plot} plot"
    found = re.findall(r'<path class="series" data-series="([^"]*)" data-points="\d+" '
                       r'd="([^"]*)"', svg.group(0))
    return {html.unescape(label): d for label, d in found}


def _latency_row(page: str, metric: str) -> list[str]:
    row = re.search(rf"<tr><td><code>{metric}</code></td>(.*?)</tr>", page)
    assert row, f"no latency row for {metric}"
    return re.findall(r'<td class="n">(.*?)</td>', row.group(1))


# --- the page's content, without a browser ---------------------------------------------


def test_sample_report_has_every_section() -> None:
    """The sample renders its title, verdict, three plots, tables, errors and settings."""
    report = _sample()
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert "Load test: <code>http://127.0.0.1:38517</code>" in page
    assert "2025-11-23 21:14:05 UTC" in page
    assert 'class="badge pass">PASSED' in page
    assert page.count('<svg class="plot"') == 3
    for plot in PLOTS:
        assert f'data-plot="{plot}" data-points="20"' in page
    for heading in ("Thresholds", "Sessions", "Counts", "Rates", "Latency", "Errors",
                    "Reconnects", "Run", "Settings"):
        assert f"<h2>{heading}" in page
    assert "turn_timeout" in page
    assert "no reply within 30s" in page
    assert "first_token.p99&lt;100ms" in page
    assert "connection reset by peer" in page
    for key in report["settings"]:
        assert f"<code>--{key.replace('_', '-')}</code>" in page
    assert _latency_row(page, "turn") == ["1,319", "296", "371", "468", "521", "529", "301"]


def test_plot_paths_have_one_point_per_interval() -> None:
    """Lines have a vertex per interval with a value; missing values break the line."""
    page = render_html(_sample())
    sessions = _paths(page, "sessions")
    assert len(re.findall(r"[ML]", sessions["active sessions"])) == 20
    throughput = _paths(page, "throughput")
    assert set(throughput) == {"messages / s", "turns / s", "replies / s", "resumes / s",
                               "handshakes / s", "errors / s"}
    assert all(len(re.findall(r"[ML]", d)) == 20 for d in throughput.values())
    latency = _paths(page, "latency")
    assert len(latency) == 8
    assert len(re.findall(r"[ML]", latency["turn p99"])) == 20
    # connect only has samples in intervals 1-5, 9 and 14: three pieces, seven points.
    assert latency["connect p50"].count("M") == 3
    assert len(re.findall(r"[ML]", latency["connect p50"])) == 7


def test_throughput_is_per_second_of_each_interval() -> None:
    """An interval's counts are divided by its length: 100 turns in 2 s plot as 50 / s."""
    report = _sample()
    report["intervals"][3].update(length_s=2.0, turns=100)
    page = render_html(report)
    assert "turns / s: 50\n" in html.unescape(page)


def test_strings_from_the_report_are_escaped() -> None:
    """Settings, error kinds, reasons and the URL are escaped: no markup gets through."""
    report = _sample()
    report["settings"]["message"] = "<script>alert(1)</script>"
    report["errors"]["by_kind"] = {"<img src=x onerror=alert(1)>": {
        "count": 3, "message": "<i>boom</i>", "first_seen_s": 1, "last_seen_s": 2}}
    report["thresholds"][0]["expression"] = "<u>turn.p99<2s</u>"
    report["counts"]["reconnects_by_reason"] = {"quote\" & 'apostrophe' <marquee>": 1}
    report["target"]["url"] = 'http://h/"><script>alert(2)</script>'
    page = render_html(report)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;i&gt;boom&lt;/i&gt;" in page
    assert "&lt;u&gt;turn.p99&lt;2s&lt;/u&gt;" in page
    assert "quote&quot; &amp; &#x27;apostrophe&#x27; &lt;marquee&gt;" in page
    for raw in ("<script", "<img", "<marquee", 'http://h/">', "<i>", "<u>"):
        assert raw not in page


def test_missing_and_empty_metrics_render_a_dash() -> None:
    """A metric without samples, a missing metric and missing keys show "—"."""
    report = _sample()
    report["latency_ms"]["resume"] = {"count": 0, "p50": None, "p90": None, "p99": None,
                                      "p99.9": None, "max": None, "mean": None}
    del report["latency_ms"]["token_gap"]
    del report["rates"]["resumes_per_s"]
    del report["counts"]["restarts"]
    del report["exit"]
    page = render_html(report)
    assert _latency_row(page, "resume") == ["0", "—", "—", "—", "—", "—", "—"]
    assert _latency_row(page, "token_gap") == ["—"] * 7
    assert '<td>resumes / s</td><td class="n">—</td>' in page
    assert '<td>restarts</td><td class="n">—</td>' in page
    assert 'class="badge ">NO VERDICT' in page


def test_page_loads_nothing_from_the_network() -> None:
    """No script, stylesheet, font, image or link: the only URL is the target, as text."""
    page = render_html(_sample())
    assert not re.search(r"\b(?:src|href|srcset|action|poster)\s*=", page, re.I)
    for token in ("<script", "<link", "<img", "<iframe", "<object", "@import", "url("):
        assert token not in page.lower()
    assert set(re.findall(r"https?://[^\s<\"'&]*", page)) == {"http://127.0.0.1:38517"}


def test_zero_intervals_still_renders() -> None:
    """A run with no finished interval renders empty plots and the whole-run tables."""
    report = _sample()
    report["intervals"] = []
    page = render_html(report)
    assert page.count('<svg class="plot"') == 3
    assert page.count("No interval data") == 3
    assert '<td>turns</td><td class="n">1,319</td>' in page


@pytest.mark.parametrize("report", [
    {},
    {"intervals": 5, "sessions": "x", "latency_ms": [], "counts": {"errors": "boom"},
     "exit": {"passed": 1}, "settings": None, "started_at": "not a time", "target": [1]},
    {"intervals": [None, {"t": None, "latency_ms": None}, {"t": "x", "turns": "y"}],
     "latency_ms": {"turn": None}, "rates": {"turns_per_s": float("nan")}},
], ids=["empty", "wrong-types", "broken-intervals"])
def test_odd_reports_render_without_raising(report: dict[str, Any]) -> None:
    """Empty, wrongly typed or partial reports render a page with dashes, never raise."""
    page = render_html(report)
    assert page.count('<svg class="plot"') == 3
    assert "—" in page
    assert "PASSED" not in page


# --- the page as Chromium renders it ----------------------------------------------------


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--hide-scrollbars", "--force-device-scale-factor=1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunk, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if chunk == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0), "expected 8 bits per channel, no interlace"
            assert colour in (2, 6), "expected RGB or RGBA"
            channels = 3 if colour == 2 else 4
        elif chunk == b"IDAT":
            chunks.append(body)
    raw, stride, rows = zlib.decompress(b"".join(chunks)), width * channels, []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride) if kind else ():
            left = row[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + left) & 255
            elif kind == 2:
                row[i] = (row[i] + up) & 255
            elif kind == 3:
                row[i] = (row[i] + ((left + up) >> 1)) & 255
            else:  # Paeth
                guess = left + up - corner
                near = min((abs(guess - left), 0, left), (abs(guess - up), 1, up),
                           (abs(guess - corner), 2, corner))
                row[i] = (row[i] + near[2]) & 255
        rows.append(bytes(row if channels == 3 else
                          b"".join(row[i:i + 3] for i in range(0, stride, 4))))
        previous = row
    return width, height, rows


def _render_in_chromium(directory: Path, report: dict[str, Any],
                        window: tuple[int, int] = WINDOW) -> tuple[dict[str, Any], Path]:
    """The probe's findings and a screenshot of the page at ``window`` (CSS px = pixels)."""
    page = render_html(report).replace("</body>", PROBE + "</body>")
    target = directory / "report.html"
    target.write_text(page, encoding="utf-8")
    size = f"--window-size={window[0]},{window[1]}"
    dumped = _chromium(directory / "profile-dom", size, "--dump-dom", target.as_uri())
    found = re.search(r'data-probe="([^"]*)"', dumped.stdout)
    assert found, f"chromium wrote no probe (exit {dumped.returncode}): {dumped.stderr[-2000:]}"
    png = directory / "report.png"
    shot = _chromium(directory / "profile-png", size, f"--screenshot={png}", target.as_uri())
    assert png.exists(), f"chromium took no screenshot (exit {shot.returncode}): {shot.stderr}"
    probe: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return probe, png


@pytest.fixture(scope="module")
def chromium_render(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The sample report rendered once by headless Chromium: probe results and screenshot."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium on PATH: apt-get install -y chromium")
    return _render_in_chromium(tmp_path_factory.mktemp("chromium"), _sample())


@needs_chromium
def test_chromium_lays_out_every_plot(chromium_render: tuple[dict[str, Any], Path]) -> None:
    """Chromium gives each plot a full-width box and each main line real length and extent."""
    plots = chromium_render[0]["plots"]
    assert set(plots) == set(PLOTS)
    for name, box in plots.items():
        assert box["w"] > 1000, f"{name} plot box {box}"
        assert box["h"] > 250, f"{name} plot box {box}"
        assert box["y"] + box["h"] <= WINDOW[1], f"{name} plot is below the screenshot"
    for name, line in (("sessions", "active sessions"), ("throughput", "turns / s"),
                       ("latency", "turn p50"), ("latency", "turn p99")):
        geometry = plots[name]["lines"][line]
        # x spans t = 1..20 s of 0..20 s: 95 % of the 1016-unit-wide plot area.
        assert geometry["w"] > 900, f"{name}/{line}: {geometry}"
        assert geometry["length"] >= geometry["w"]
    assert plots["sessions"]["lines"]["active sessions"]["h"] > 150  # the ramp from 20 to 100


@needs_chromium
def test_chromium_screenshot_draws_every_plot(
        chromium_render: tuple[dict[str, Any], Path]) -> None:
    """In the screenshot, each plot's box holds many series-coloured pixels across its width."""
    probe, png = chromium_render
    width, height, rows = _decode_png(png.read_bytes())
    assert (width, height) == WINDOW
    for name, box in probe["plots"].items():
        left, top = int(box["x"]), int(box["y"])
        right, bottom = int(box["x"] + box["w"]), int(box["y"] + box["h"])
        coloured, columns = 0, set()
        for y in range(top, bottom):
            row = rows[y]
            for x in range(left, right):
                r, g, b = row[3 * x:3 * x + 3]
                if max(r, g, b) - min(r, g, b) >= 80:  # a series colour, not grey or white
                    coloured += 1
                    columns.add(x)
        assert coloured > 1500, f"{name}: only {coloured} coloured pixels"
        assert len(columns) > 0.8 * (right - left), f"{name}: lines span {len(columns)} px"


def _with_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """The sample with a failed threshold and error details, as a degraded run writes them."""
    report["thresholds"] = [
        {"expression": "errors.ratio<=0.01", "value": 0.0532, "unit": "ratio", "ok": False},
        {"expression": "turn.p99<2s", "value": 468.0, "unit": "ms", "ok": True},
        {"expression": "first_token.p99.9<1ms", "value": None, "unit": "ms", "ok": False}]
    report["errors"] = {"ratio": 0.0532, "count": 166, "operations": 3118, "by_kind": {
        "connection_lost": {"count": 134, "message": "server closed the connection with code "
                            "1011", "first_seen_s": 0.2, "last_seen_s": 29.8},
        "resume_refused": {"count": 14, "message": "<b>injected</b> refusal",
                           "first_seen_s": 3.5, "last_seen_s": 29.8}}}
    report["exit"].update(passed=False, status=1)
    return report


def test_thresholds_and_error_details_render() -> None:
    """Each threshold with its figure and a check or cross; each error kind with its details."""
    page = render_html(_with_verdict(_sample()))
    assert 'class="badge fail">FAILED' in page
    assert ('<tr><td class="bad">✗</td><td><code>errors.ratio&lt;=0.01</code></td>'
            '<td class="n">5.32 %</td></tr>') in page
    assert ('<tr><td class="ok">✓</td><td><code>turn.p99&lt;2s</code></td>'
            '<td class="n">468 ms</td></tr>') in page
    assert "no samples" in page
    assert ('<tr><td><code>connection_lost</code></td><td class="n">134</td>'
            '<td class="n">0.2 s</td><td class="n">29.8 s</td>'
            '<td class="msg">server closed the connection with code 1011</td></tr>') in page
    assert "&lt;b&gt;injected&lt;/b&gt; refusal" in page
    assert "166 failed of 3,118 operations: 5.32 %" in page


def test_no_session_connected_shows_the_hint() -> None:
    """A run where nothing connected says so, with the hint, instead of PASSED or FAILED."""
    report = _sample()
    report["exit"].update(passed=False, status=3, stopped_because="no_session_connected",
                          hint="authentication: the server refused the sessions")
    page = render_html(report)
    assert 'class="badge fail">NO SESSION CONNECTED' in page
    assert "authentication: the server refused the sessions" in page


VERDICT_PROBE = """<script>
(() => {
  const found = {};
  for (const id of ["thresholds", "errors"]) {
    const panel = document.getElementById(id);
    const box = panel.getBoundingClientRect();
    const rows = [...panel.querySelectorAll("tbody tr")].map(row => ({
      text: row.innerText, h: row.getBoundingClientRect().height,
      colour: getComputedStyle(row.cells[0]).color}));
    found[id] = {w: box.width, h: box.height, rows};
  }
  document.body.dataset.probe = JSON.stringify(found);
})();
</script>"""


@needs_chromium
def test_chromium_shows_thresholds_and_error_details(tmp_path: Path) -> None:
    """In Chromium the thresholds (cross in red, check in green) and error rows are laid out."""
    page = render_html(_with_verdict(_sample())).replace("</body>", VERDICT_PROBE + "</body>")
    target = tmp_path / "report.html"
    target.write_text(page, encoding="utf-8")
    dumped = _chromium(tmp_path / "profile", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                       "--dump-dom", target.as_uri())
    found = re.search(r'data-probe="([^"]*)"', dumped.stdout)
    assert found, f"chromium wrote no probe (exit {dumped.returncode}): {dumped.stderr[-2000:]}"
    probe = json.loads(html.unescape(found.group(1)))
    thresholds, errors = probe["thresholds"], probe["errors"]
    assert thresholds["w"] > 1000
    assert thresholds["h"] > 100
    assert [row["text"].split("\t")[:2] for row in thresholds["rows"]] == [
        ["✗", "errors.ratio<=0.01"], ["✓", "turn.p99<2s"], ["✗", "first_token.p99.9<1ms"]]
    assert thresholds["rows"][0]["colour"] == "rgb(198, 40, 40)"  # the cross, red
    assert thresholds["rows"][1]["colour"] == "rgb(26, 138, 71)"  # the check, green
    assert all(row["h"] > 10 for row in thresholds["rows"] + errors["rows"])
    assert [row["text"].split("\t")[0] for row in errors["rows"]] == [
        "connection_lost", "resume_refused"]
    assert "server closed the connection with code 1011" in errors["rows"][0]["text"]


if __name__ == "__main__":
    # Regenerate the docs screenshot: the whole page of the sample report, 1280 px wide.
    import tempfile

    if CHROMIUM is None:
        sys.exit("needs Debian's chromium on PATH: apt-get install -y chromium")
    output = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/load-report.png")
    with tempfile.TemporaryDirectory() as scratch:
        probe, _ = _render_in_chromium(Path(scratch), _sample())
        full = (WINDOW[0], int(probe["page_height"]))
        shot = _render_in_chromium(Path(scratch), _sample(), full)[1]
        shutil.copyfile(shot, output)
    print(f"wrote {output} ({full[0]}x{full[1]})")
