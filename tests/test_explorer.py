"""The attention explorer (``explorer.html``): its data against `select_view`, the scripts' flags, and (when
Chromium, chromedriver and selenium are installed, as `.ci/run` does) the page itself in headless Chromium:
it renders, its selectors change the map on screen, hovering reads the right weight, and the console stays clean.

The browser tests use three tiny real runs trained here by train.py: an image run, a permuted-pixel run and a
point-cloud run (shapes3d)."""
import base64
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):  # the scripts live at the repository root; shared helpers beside this file
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import demo_visualizations  # noqa: E402
import visualize_attention  # noqa: E402
from conftest import run_train_in  # noqa: E402
from perceiver.rundir import RunDir  # noqa: E402
from perceiver.viz import explorer, synthetic  # noqa: E402
from perceiver.viz.selection import select_view  # noqa: E402
from perceiver.viz.style import COLORMAPS  # noqa: E402

SMALL = dict(latents=6, samples=3, points=128, size=12)


def payload_of(html: str) -> dict:
    import json

    text = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(text.replace("<\\/", "</"))


def decode_cross(att: dict, e: int, stage: int) -> np.ndarray:
    """The page's cross-attention block, dequantised: (S, heads, M, N)."""
    cs = att["cross_shape"]
    block = att["epochs"][e]["cross"][stage]
    q = np.frombuffer(base64.b64decode(block["q"]), np.uint8).astype(np.float64)
    peak = np.frombuffer(base64.b64decode(block["peak"]), "<f4").astype(np.float64)
    shape = (-1, cs["heads"], cs["latents"], cs["positions"])
    return q.reshape(shape) / 255.0 * peak.reshape(shape[:-1])[..., None]


# ------------------------------------------------------------------------------------ data, no browser


def test_quantized_rows_are_within_half_a_level_of_the_peak():
    a = np.random.default_rng(0).dirichlet(np.full(300, 0.3), size=(4, 7)).astype(np.float32)
    q, peak = explorer.quantize_rows(a)
    assert q.dtype == np.uint8 and q.shape == a.shape and peak.shape == a.shape[:-1]
    back = q / 255.0 * peak[..., None]
    assert np.all(np.abs(back - a) <= peak[..., None] / 510 + 1e-7)
    assert np.all(q.max(-1) == 255)  # every row uses the full range


@pytest.mark.parametrize("permuted", [False, True])
def test_page_data_matches_select_view(tmp_path, permuted):
    """Maps in input order (permuted runs mapped back) and the same "most concentrated" latent as the figures."""
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=4, attention_epochs=(1, 4), permuted=permuted,
                             **SMALL)
    [path] = explorer.write_explorer(run)
    assert path == run.plots_dir / "explorer.html"
    att = payload_of(path.read_text())["attention"]
    assert [e["epoch"] for e in att["epochs"]] == [1, 4] and att["permuted"] is permuted
    for e, epoch in enumerate((1, 4)):
        snap = run.load_attention(epoch)
        cross = decode_cross(att, e, stage=1)
        for sample in range(3):
            for head in (None, 1):
                view = select_view(snap, stage=1, sample=sample, head=head, latent="auto")
                assert att["epochs"][e]["auto"][1][sample][2 if head is None else head] == view.latent
                page = cross[sample].mean(0) if head is None else cross[sample, head]
                row = page[view.latent]
                np.testing.assert_allclose(row, view.row, atol=0.01 * view.row.max())
    if permuted:  # the raw token order would not line up: the page holds the mapped-back order
        snap = run.load_attention(4)
        raw = snap.cross[1, 0, 0].astype(np.float64)
        assert np.abs(decode_cross(att, 1, 1)[0, 0] - raw).max() > 0.1 * raw.max()


def test_page_is_self_contained(tmp_path):
    run = synthetic.make_run(tmp_path / "run", kind="pointcloud", epochs=3, attention_epochs=(1, 3), **SMALL)
    [path] = explorer.write_explorer(run)
    html = path.read_text()
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<script[^>]*\bsrc=", html) and not re.search(r"<link[^>]*stylesheet", html)
    assert html.count("<script") == 2  # the data and the inlined explorer.js
    data = payload_of(html)
    assert set(data["colormaps"]) == set(COLORMAPS)
    assert all(len(base64.b64decode(t)) == 256 * 3 for t in data["colormaps"].values())
    att = data["attention"]
    assert att["kind"] == "pointcloud" and att["cross_shape"]["positions"] == 128
    pts = np.frombuffer(base64.b64decode(att["inputs"][0]), "<f4").reshape(-1, 3)
    np.testing.assert_allclose(pts, run.load_attention(3).inputs[0][:, :3], rtol=1e-6)


def test_caps_keep_first_and_last_epochs_and_the_first_samples(tmp_path, capsys):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=6, attention_epochs=(1, 2, 3, 4, 5, 6),
                             **SMALL)
    opts = explorer.ExplorerOptions(max_epochs=3, max_samples=2)
    att = payload_of(explorer.write_explorer(run, tmp_path / "out", opts)[0].read_text())["attention"]
    assert [e["epoch"] for e in att["epochs"]] in ([1, 4, 6], [1, 3, 6])
    assert att["saved_epochs"] == [1, 2, 3, 4, 5, 6] and len(att["samples"]) == 2 and len(att["inputs"]) == 2
    assert decode_cross(att, 0, 0).shape[0] == 2
    assert "keeps 3 of 6 saved epochs" in capsys.readouterr().out


def test_default_caps_fit_the_budget_and_explicit_caps_warn(tmp_path, capsys, monkeypatch):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=6, attention_epochs=(1, 2, 3, 4, 5, 6),
                             **SMALL)
    snap = run.load_attention(6)
    monkeypatch.setattr(explorer, "BUDGET_MB", explorer.estimate_mb(snap, 2, 2.5))  # 2 epochs x 2.5 samples fit
    [path] = explorer.write_explorer(run)
    att = payload_of(path.read_text())["attention"]
    assert [e["epoch"] for e in att["epochs"]] == [1, 6] and len(att["samples"]) == 2  # epochs go first, then samples
    out, err = capsys.readouterr()
    assert "keeps 2 of 6 saved epochs" in out and "2 of 3 probe samples" in out and "budget" not in err
    explorer.write_explorer(run, opts=explorer.ExplorerOptions(max_epochs=6, max_samples=3))
    assert "over the" in capsys.readouterr().err  # asked for more than fits: written, with a warning
    estimate = explorer.estimate_mb(snap, 6, 3) * 1e6
    assert estimate - explorer.PAGE_MB * 1e6 < path.stat().st_size < estimate  # errs on the safe side


def test_curves_only_without_attention_and_an_error_without_anything(tmp_path, capsys):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=3, attention_epochs=(), **SMALL)
    data = payload_of(explorer.write_explorer(run)[0].read_text())
    assert data["attention"] is None and data["curves"]["epochs"] == [1, 2, 3]
    assert "--save_attention_maps" in capsys.readouterr().err
    empty = RunDir(tmp_path / "empty")
    empty.create()
    empty.write_config({"args": {}})
    rc = visualize_attention.cli(["--logs_dir", str(empty.path), "--html"])
    assert rc == 1
    assert "neither metrics nor attention" in capsys.readouterr().err


def test_scripts_write_the_explorer_and_check_the_caps(tmp_path, capsys):
    run = synthetic.make_run(tmp_path / "run", kind="image", epochs=3, attention_epochs=(1, 3), **SMALL)
    assert demo_visualizations.cli(["--logs_dir", str(run.path), "--interactive", "--colormap", "plasma"]) == 0
    page = run.plots_dir / "explorer.html"
    assert page.exists() and not (run.plots_dir / "demo").exists()  # the explorer instead of the figures
    assert payload_of(page.read_text())["defaults"] == {"cmap": "plasma", "alpha": 0.6}
    assert f"wrote {page}" in capsys.readouterr().out
    out = tmp_path / "html"
    assert visualize_attention.cli(["--logs_dir", str(run.path), "--html", "--output_dir", str(out),
                                    "--max_epochs", "1"]) == 0
    assert [e["epoch"] for e in payload_of((out / "explorer.html").read_text())["attention"]["epochs"]] == [3]
    assert not list(out.glob("*.png"))
    for script in (demo_visualizations, visualize_attention):
        with pytest.raises(SystemExit) as e:
            script.cli(["--logs_dir", str(run.path), "--max_samples", "0"])
        assert e.value.code == 2
        assert "--max_samples: must be at least 1" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- real runs, browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1300"]
TRAIN = ["--epochs", "2", "--save_attention_maps", "--attention_save_interval", "1", "--save_metrics",
         "--num_probe_samples", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Three tiny train.py runs (about 10 s together): image, permuted pixels, point cloud, each with its page."""
    logs = tmp_path_factory.mktemp("explorer_logs")
    runs = {}
    for name, extra in (("image", []), ("permuted", ["--permute_pixels"]),
                        ("points", ["--dataset", "shapes3d", "--shapes_num_points", "128"])):
        result = run_train_in(logs, TRAIN + extra, name=name)
        assert result.code == 0, result.err
        run = RunDir(result.run_dir)
        assert demo_visualizations.cli(["--logs_dir", str(run.path), "--interactive"]) == 0
        runs[name] = run
    return runs


def _browser_or_skip():
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                  None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("headless browser test needs chromium and chromedriver (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("headless browser test needs selenium (pip install -r requirements.txt)")
    return binary, driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    yield driver
    driver.quit()


def open_page(browser, run: RunDir):
    browser.get_log("browser")  # drain the console: the errors read later are this page's
    browser.get((run.plots_dir / "explorer.html").as_uri())
    return browser


def current(browser) -> dict:
    return browser.execute_script(
        "const c = window.explorer.current; return {epoch: c.epoch, latent: c.latent, sample: c.sample, "
        "values: Array.from(c.values), vmax: c.vmax}")


def console_errors(browser) -> list:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def distinct_colours(browser, canvas_id: str) -> int:
    return browser.execute_script(
        "const c = document.getElementById(arguments[0]); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; const s = new Set();"
        "for (let i = 0; i < d.length; i += 16) s.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); return s.size;",
        canvas_id)


def choose(browser, select_id: str, value) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", select_id)).select_by_value(str(value))


def set_slider(browser, slider_id: str, value: int) -> None:
    """Move a range input as a user would (keyboard), so its input event fires."""
    from selenium.webdriver.common.keys import Keys

    slider = browser.find_element("id", slider_id)
    now = int(slider.get_attribute("value"))
    key = Keys.ARROW_RIGHT if value > now else Keys.ARROW_LEFT
    for _ in range(abs(value - now)):
        slider.send_keys(key)


@pytest.mark.parametrize("name", ["image", "permuted", "points"])
def test_explorer_renders_and_its_selectors_work(browser, real_runs, name):
    run = real_runs[name]
    open_page(browser, run)
    assert browser.execute_script("return window.explorer && window.explorer.current !== null")
    for canvas in ("chart-acc", "chart-loss", "chart-lr", "input-canvas", "self-canvas", "colorbar"):
        assert distinct_colours(browser, canvas) > 3, f"{canvas} looks blank"
    epochs = run.attention_epochs()
    last = run.load_attention(epochs[-1])
    shown = current(browser)
    view = select_view(last, latent="auto")  # the page opens on the last epoch, sample 0, mean of heads
    assert shown["epoch"] == epochs[-1] and shown["latent"] == view.latent
    np.testing.assert_allclose(shown["values"], view.row, atol=0.01 * view.row.max())

    other = 3 if view.latent != 3 else 4
    choose(browser, "sel-latent", other)  # another latent: another map, the one the figures would show
    three = current(browser)
    np.testing.assert_allclose(three["values"], select_view(last, latent=other).row, atol=0.01 * view.row.max())
    assert browser.find_element("id", "input-panel").get_attribute("data-latent") == str(other)
    assert np.abs(np.subtract(three["values"], shown["values"])).max() > 0.05 * view.row.max()

    set_slider(browser, "sel-epoch", 0)  # back to the first saved epoch
    first = current(browser)
    assert first["epoch"] == epochs[0]
    assert browser.find_element("id", "input-panel").get_attribute("data-epoch") == str(epochs[0])
    np.testing.assert_allclose(first["values"], select_view(run.load_attention(epochs[0]), latent=other).row,
                               atol=0.01 * max(first["values"]))
    assert not np.allclose(first["values"], three["values"], atol=1e-4)

    choose(browser, "sel-sample", 2)
    assert current(browser)["sample"] == 2
    assert console_errors(browser) == []


def test_hovering_a_pixel_reads_its_weight_and_rank(browser, real_runs):
    from selenium.webdriver.common.action_chains import ActionChains

    run = real_runs["permuted"]
    open_page(browser, run)
    canvas = browser.find_element("id", "input-canvas")
    h, w = run.load_attention(run.attention_epochs()[-1]).image_shape[:2]
    x, y = 21, 9
    size = canvas.size
    ActionChains(browser).move_to_element_with_offset(
        canvas, int((x + 0.5) * size["width"] / w - size["width"] / 2),
        int((y + 0.5) * size["height"] / h - size["height"] / 2)).perform()
    text = browser.find_element("id", "input-readout").text
    m = re.match(r"pixel \(x (\d+), y (\d+)\): weight ([\d.e+-]+) .*rank (\d+) of (\d+)", text)
    assert m, text
    assert (int(m.group(1)), int(m.group(2))) == (x, y) and int(m.group(5)) == h * w
    values = np.array(current(browser)["values"])
    index = y * w + x
    assert float(m.group(3)) == pytest.approx(values[index], rel=1e-3, abs=1e-8)
    assert int(m.group(4)) == 1 + int((values > values[index]).sum())
    view = select_view(run.load_attention(run.attention_epochs()[-1]), latent="auto")
    assert float(m.group(3)) == pytest.approx(view.row[index], abs=0.01 * view.row.max())
    assert console_errors(browser) == []


def test_point_cloud_rotates_and_self_attention_row_selects_a_latent(browser, real_runs):
    from selenium.webdriver.common.action_chains import ActionChains

    run = real_runs["points"]
    open_page(browser, run)
    canvas = browser.find_element("id", "input-canvas")
    before = canvas.screenshot_as_png
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(60, 20).release().perform()
    assert canvas.screenshot_as_png != before  # dragging turned the cloud

    matrix = browser.find_element("id", "self-canvas")
    latents = browser.execute_script("return window.explorer.data.attention.self_shape.latents")
    row = 5
    offset = int((row + 0.5) * matrix.size["height"] / latents - matrix.size["height"] / 2)
    ActionChains(browser).move_to_element_with_offset(matrix, 0, offset).click().perform()
    assert current(browser)["latent"] == row
    assert browser.find_element("id", "sel-latent").get_attribute("value") == str(row)
    assert browser.find_element("id", "self-panel").get_attribute("data-highlight") == str(row)
    assert browser.find_element("id", "self-readout").text.startswith(f"latent {row} → latent")
    assert console_errors(browser) == []


def test_the_address_reopens_a_view(browser, real_runs):
    run = real_runs["image"]
    browser.get_log("browser")
    browser.get((run.plots_dir / "explorer.html").as_uri() + "#sample=1&latent=2&epoch=0&cmap=hot&head=bogus")
    state = browser.execute_script("return window.explorer.state")
    assert (state["sample"], state["latent"], state["epoch"], state["cmap"], state["head"]) == (1, 2, 0, "hot", "mean")
    assert current(browser)["epoch"] == run.attention_epochs()[0]
    choose(browser, "sel-latent", "mean")
    assert "latent=mean" in browser.current_url  # the address follows the selectors
    mean = current(browser)
    assert mean["latent"] is None
    view = select_view(run.load_attention(run.attention_epochs()[0]), sample=1, latent="mean")
    np.testing.assert_allclose(mean["values"], view.row, atol=0.01 * view.row.max())
    assert console_errors(browser) == []


def test_colour_controls_and_a_click_on_the_curves(browser, real_runs):
    from selenium.webdriver.common.action_chains import ActionChains

    run = real_runs["image"]
    open_page(browser, run)
    canvas = browser.find_element("id", "input-canvas")
    before = canvas.screenshot_as_png
    choose(browser, "sel-cmap", "seismic")
    assert canvas.screenshot_as_png != before

    single = current(browser)
    browser.find_element("id", "sel-shared").click()  # one colour scale: the peak over every shown epoch
    shared = current(browser)
    peaks = [select_view(run.load_attention(e), latent="auto").row.max() for e in run.attention_epochs()]
    assert shared["vmax"] == pytest.approx(max(peaks), rel=0.01)
    assert shared["vmax"] >= single["vmax"] and shared["values"] == single["values"]

    chart = browser.find_element("id", "chart-acc")  # a click at the left edge: the first epoch with maps
    ActionChains(browser).move_to_element_with_offset(chart, -chart.size["width"] // 2 + 50, 0).click().perform()
    assert current(browser)["epoch"] == run.attention_epochs()[0]
    assert console_errors(browser) == []
