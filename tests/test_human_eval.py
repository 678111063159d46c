"""Human evaluation study (evaluation.human_study, experiments.human_eval): Krippendorff's alpha, input checks,
blinding, assignment, the evaluate importer, a real headless browser study, and a server killed mid-study."""

from __future__ import annotations

import ast
import http.client
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from evaluation.human_study.report import krippendorff_alpha_interval, mean_ci95
from evaluation.human_study.store import CRITERIA, RatingError, Store, parse_rating

REPO = Path(__file__).resolve().parents[1]
T_975_DF1 = 12.706204736174698  # Student t 97.5% quantile, 1 degree of freedom
MODELS = ("full", "no_temp_lora")
LANGUAGE = [["open the drawer", "pick up the cube", "close the drawer"],
            ["press the button", "open the window", "turn the knob"]]


# ------------------------------------------------------------------------------------------- alpha
def test_krippendorff_alpha_hand_computed():
    # units {1,2}, {3,3}, {2,4}: n = 6 pairable values
    # D_o = (2*1 + 0 + 2*4) / 6 = 10/6;  D_e = 2*6*5.5/(6*5) = 11/5  ->  alpha = 1 - (10/6)/(11/5) = 8/33
    assert krippendorff_alpha_interval([[1, 2], [3, 3], [2, 4]]) == pytest.approx(8 / 33, abs=1e-12)
    # a unit with one value is not pairable and changes nothing
    assert krippendorff_alpha_interval([[1, 2], [3, 3], [2, 4], [7]]) == pytest.approx(8 / 33, abs=1e-12)
    # Krippendorff's reliability-data example (4 coders, 12 units, missing values): interval alpha 0.849
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
              [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]]
    units = [[v for v in unit if v is not None] for unit in zip(*coders)]
    assert round(krippendorff_alpha_interval(units), 3) == 0.849
    assert krippendorff_alpha_interval([[0.8, 0.8, 0.8], [0.6, 0.6, 0.6]]) == 1.0  # perfect agreement
    assert krippendorff_alpha_interval([[0.2, 0.5, 0.8]] * 2) == pytest.approx(-0.25)  # raters, not videos, differ
    assert math.isnan(krippendorff_alpha_interval([[0.5, 0.5], [0.5, 0.5]]))  # no variation: undefined
    assert math.isnan(krippendorff_alpha_interval([[0.5], [0.7]]))  # nothing pairable
    mean, half = mean_ci95([0.7, 0.5])
    assert mean == pytest.approx(0.6) and half == pytest.approx(T_975_DF1 * 0.1)
    assert mean_ci95([0.3]) == (0.3, None)


def _page_replaced(element):
    """A wait condition: the page holding `element` was replaced by the next one. Selenium's `staleness_of`
    only treats StaleElementReferenceException as stale; Chromium answers a node of a document that is being
    replaced with a generic 'Node with given id does not belong to the document' error (seen in CI), which
    means the same thing."""
    from selenium.common.exceptions import WebDriverException

    def replaced(_driver):
        try:
            element.is_enabled()
        except WebDriverException:
            return True
        return False

    return replaced


# ---------------------------------------------------------------------------------- videos fixture
def _write_evaluate_output(root: Path) -> Path:
    """What `experiments.evaluate --save-videos` leaves: OUT/videos/episode_XXXXX.npz + rollout.json, and
    the h5 episode data it read (only the parts the importer uses: per-chunk language)."""
    import h5py

    data = root / "data"
    data.mkdir()
    with h5py.File(data / "eval.h5", "w") as f:
        for i, lang in enumerate(LANGUAGE):
            f.create_group(f"episode_{i:07d}").create_dataset("language", data=lang, dtype=h5py.string_dtype("utf-8"))
    videos = root / "run" / "videos"
    videos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(len(LANGUAGE)):
        np.savez_compressed(videos / f"episode_{i:05d}.npz", name=np.array(f"eval.h5:episode_{i:07d}"),
                            **{f"video_{m}": rng.integers(0, 255, (7, 15, 15, 3), dtype=np.uint8) for m in MODELS})
    (videos / "rollout.json").write_text(json.dumps({"command": "python -m experiments.evaluate --save-videos",
                                                     "settings": {"data": str(data)}, "variants": list(MODELS)}))
    return videos


@pytest.fixture(scope="module")
def study_videos(tmp_path_factory) -> Path:
    from evaluation.human_study.videos import import_evaluate

    root = tmp_path_factory.mktemp("study")
    out = root / "study_videos"
    manifest = import_evaluate(_write_evaluate_output(root), out, fps=4, min_size=64)
    assert manifest["notes"] == []
    return out


def test_import_evaluate_videos(study_videos, tmp_path):
    from evaluation.human_study.videos import import_evaluate, load_manifest

    entries = load_manifest(study_videos)
    assert sorted((e["episode"], e["model"]) for e in entries) == sorted(
        (f"eval.h5:episode_{i:07d}", m) for i in range(len(LANGUAGE)) for m in MODELS)
    for e in entries:
        i = int(e["episode"][-7:])
        assert e["captions"] == LANGUAGE[i]
        assert (study_videos / e["file"]).stat().st_size > 0
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(study_videos / entries[0]["file"]))
    meta = next(reader)
    assert tuple(meta["size"]) == (76, 76) and len(list(reader)) == 7  # 15x15 upscaled x5, padded even; all frames
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(study_videos / entries[0]["file"])],
                           capture_output=True, text=True, timeout=30).stderr
    assert re.search(r"Video: h264.*yuv420p", probe), probe  # what browsers decode
    # without the episode data the captions are empty and the manifest says why
    src = tmp_path / "src"
    shutil.copytree(study_videos.parent / "run" / "videos", src)
    (src / "rollout.json").write_text(json.dumps({"settings": {"data": str(tmp_path / "gone")}}))
    manifest = import_evaluate(src, tmp_path / "out", min_size=16)
    assert all(v["captions"] == [] for v in manifest["videos"]) and "not found" in manifest["notes"][0]


# ------------------------------------------------------------------------------------ input checks
def test_parse_rating_messages():
    ok = {"rater": " ann ", "video": "abc", "quality": "0", "coherence": 1, "adherence": "0.25"}
    assert parse_rating(ok) == ("ann", "abc", {"quality": 0.0, "coherence": 1.0, "adherence": 0.25})
    for bad, message in [({**ok, "quality": "1.01"}, "quality must be between 0 and 1"),
                         ({**ok, "adherence": -0.1}, "adherence must be between 0 and 1"),
                         ({**ok, "coherence": "nan"}, "coherence must be between 0 and 1"),
                         ({**ok, "quality": "good"}, "quality must be a number"),
                         ({**ok, "coherence": True}, "coherence must be a number"),
                         ({k: v for k, v in ok.items() if k not in ("video", "quality")}, "missing fields: video, quality"),
                         ({**ok, "rater": "  "}, "missing field: rater")]:
        with pytest.raises(RatingError, match=message):
            parse_rating(bad)


def test_http_checks_and_blinding(study_videos, tmp_path):
    from evaluation.human_study.app import create_app
    from evaluation.human_study.videos import load_manifest

    store = Store(tmp_path / "db.sqlite")
    store.sync_videos(load_manifest(study_videos))
    client = create_app(store, study_videos).test_client()
    page = client.get("/rate?rater=ann")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    vid = re.search(r'name="video" id="video-id" value="([0-9a-f]+)"', html).group(1)
    assert len(vid) == 16
    files = [v["file"] for v in store.videos()]
    for secret in (*MODELS, *files, "episode_0", "eval.h5"):  # the page never names the model or the file
        assert secret not in html
    assert any(c in html for c in sum(LANGUAGE, []))  # the action captions are shown
    video = client.get(f"/video/{vid}")
    assert video.status_code == 200 and video.mimetype == "video/mp4" and len(video.data) > 0
    assert client.get("/video/0000000000000000").status_code == 404

    good = {"rater": "ann", "video": vid, "quality": 0.5, "coherence": 0.5, "adherence": 0.5}
    for body, message in [({**good, "quality": 1.5}, "quality must be between 0 and 1"),
                          ({**good, "adherence": -1}, "adherence must be between 0 and 1"),
                          ({**good, "video": "feedfacefeedface"}, "unknown video id 'feedfacefeedface'"),
                          ({k: v for k, v in good.items() if k != "coherence"}, "missing field: coherence")]:
        r = client.post("/api/ratings", json=body)
        assert r.status_code == 400 and message in r.get_json()["error"], (body, r.get_json())
        form = client.post("/rate", data={k: str(v) for k, v in body.items()})  # the page shows the message
        assert form.status_code == 400 and message in form.get_data(as_text=True).replace("&#39;", "'")
    assert client.post("/api/ratings", data="not json").status_code == 400
    assert client.post("/api/ratings", json=good).status_code == 201
    dup = client.post("/api/ratings", json={**good, "quality": 0.9})
    assert dup.status_code == 400 and "already rated" in dup.get_json()["error"]
    form = client.post("/rate", data={k: str(v) for k, v in good.items()})
    assert form.status_code == 400 and "already rated" in form.get_data(as_text=True)
    assert [(r["rater"], r["video"], r["quality"]) for r in store.ratings()] == [("ann", vid, 0.5)]
    assert client.get("/rate").status_code == 400 and client.get("/api/next").status_code == 400


def test_assignment_spreads_ratings(study_videos, tmp_path):
    """Each rater gets a least-rated video they have not rated (a video shown to someone else counts as being
    rated); a reload shows the same video; three raters who each finish give every video 3 different raters."""
    from evaluation.human_study.videos import load_manifest

    store = Store(tmp_path / "db.sqlite")
    store.sync_videos(load_manifest(study_videos))
    ids = [v["id"] for v in store.videos()]
    raters = ["r0", "r1", "r2", "r3", "r4"]
    shown = [store.next_video(r)["id"] for r in raters[:len(ids)]]
    assert len(set(shown)) == len(ids)  # open assignments spread the raters over the videos
    assert store.next_video("r0")["id"] == shown[0]  # stable until rated
    store = Store(tmp_path / "db2.sqlite")  # a fresh study without open assignments
    store.sync_videos(load_manifest(study_videos))
    ids = [v["id"] for v in store.videos()]
    counts: dict[str, set] = {v: set() for v in ids}
    active = raters[:3]
    while active:
        for rater in list(active):
            video = store.next_video(rater)
            if video is None:
                active.remove(rater)
                continue
            eligible = [len(c) for v, c in counts.items() if rater not in c]
            assert rater not in counts[video["id"]] and len(counts[video["id"]]) == min(eligible)
            store.add_rating({"rater": rater, "video": video["id"], **{k: 0.5 for k in CRITERIA}})
            counts[video["id"]].add(rater)
    assert all(c == {"r0", "r1", "r2"} for c in counts.values())
    assert store.progress()["complete"] == len(ids) and store.progress("r0")["rated_by_you"] == len(ids)


def test_cli_is_thin_and_helpful():
    tree = ast.parse((REPO / "experiments" / "human_eval.py").read_text())
    imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("experiments")], imported
    out = subprocess.run([sys.executable, "-m", "experiments.human_eval", "serve", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--videos" in out.stdout and "127.0.0.1" in out.stdout


# --------------------------------------------------------------------------------------- scoring
def _scores(model: str, episode: int, rater: int) -> dict[str, float]:
    """Quality: a per-video base shifted by the rater; coherence: raters agree; adherence: raters differ
    and videos do not."""
    base = {("full", 0): 0.7, ("full", 1): 0.5, ("no_temp_lora", 0): 0.4, ("no_temp_lora", 1): 0.2}[model, episode]
    coherence = {("full", 0): 0.8, ("full", 1): 0.6, ("no_temp_lora", 0): 0.4, ("no_temp_lora", 1): 0.2}[model, episode]
    return {"quality": round(base + 0.1 * (rater - 1), 2), "coherence": coherence,
            "adherence": round(0.2 + 0.3 * rater, 2)}


def _check_report(summary: dict) -> None:
    """Hand-computed: per model, quality per-video means {0.7, 0.5} (full) / {0.4, 0.2}, units
    {.6,.7,.8},{.4,.5,.6} -> D_o = 0.12/6 = 0.02, D_e = 1.2/30 = 0.04, alpha 0.5; coherence agrees
    (alpha 1); adherence {.2,.5,.8} twice -> D_o = 0.18, D_e = 0.144, alpha -0.25, CI 0."""
    models = summary["models"]
    assert list(models) == list(MODELS)
    for model, (q, c) in zip(MODELS, [(0.6, 0.7), (0.3, 0.3)]):
        s = models[model]
        assert (s["raters"], s["videos"], s["ratings"], s["videos_below_min"]) == (3, 2, 6, 0)
        assert s["quality"]["mean"] == pytest.approx(q) and s["quality"]["ci95"] == pytest.approx(T_975_DF1 * 0.1)
        assert s["quality"]["alpha"] == pytest.approx(0.5)
        assert s["coherence"]["mean"] == pytest.approx(c) and s["coherence"]["alpha"] == pytest.approx(1.0)
        assert s["adherence"]["mean"] == pytest.approx(0.5) and s["adherence"]["ci95"] == pytest.approx(0.0, abs=1e-12)
        assert s["adherence"]["alpha"] == pytest.approx(-0.25)
    assert summary["raters"] == 3 and summary["ratings"] == 12 and summary["videos"] == 4


# ------------------------------------------------------------------------------- real browser study
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser(profile: Path):
    if not (os.path.isfile(CHROMIUM) and os.path.isfile(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # no Selenium Manager
    driver.set_page_load_timeout(20)
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = _browser(tmp_path / "profile")  # skips when chromium / chromedriver / selenium are absent
    yield driver
    driver.quit()


def test_browser_study_three_raters(study_videos, browser, tmp_path):
    driver = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    from evaluation.human_study.app import create_app
    from evaluation.human_study.videos import load_manifest
    from experiments.human_eval import main

    db = tmp_path / "ratings.sqlite"
    store = Store(db)
    store.sync_videos(load_manifest(study_videos))
    truth = {v["id"]: (v["model"], int(v["episode"][-7:])) for v in store.videos()}
    server = make_server("127.0.0.1", 0, create_app(store, study_videos), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}"
    wait = WebDriverWait(driver, 15, poll_frequency=0.05)
    try:
        for r, rater in enumerate(["ann", "bob", "cy"]):
            driver.get(base + "/")
            driver.find_element(By.ID, "rater").send_keys(rater)
            driver.find_element(By.ID, "start").click()
            wait.until(EC.presence_of_element_located((By.ID, "progress")))
            seen = 0
            while not driver.find_elements(By.ID, "done"):
                assert seen < len(truth), "the study shows more videos than it has: ratings are not kept"
                vid = driver.find_element(By.ID, "video-id").get_attribute("value")
                assert not any(m in driver.page_source for m in MODELS)  # blinded
                if seen == 0:  # the browser decodes the imported mp4
                    wait.until(lambda d: d.execute_script(
                        "const v = document.getElementById('video'); return v.readyState >= 1 && v.videoWidth > 0;"))
                    assert driver.execute_script("return document.getElementById('video').videoWidth") == 76
                    captions = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#captions li")]
                    assert captions == LANGUAGE[truth[vid][1]]
                scores = _scores(*truth[vid], r)
                if r == 0 and seen == 0:
                    # an out-of-range score that gets past the page's own checks is refused and shown
                    form = driver.find_element(By.ID, "rating-form")
                    driver.execute_script(
                        "for (const [k, v] of Object.entries(arguments[0])) document.getElementById(k).value = v;"
                        "arguments[1].submit();", {**{k: str(v) for k, v in scores.items()}, "quality": "1.5"}, form)
                    wait.until(_page_replaced(form))
                    wait.until(EC.presence_of_element_located((By.ID, "progress")))
                    assert "quality must be between 0 and 1" in driver.find_element(By.ID, "error").text
                    assert driver.find_element(By.ID, "video-id").get_attribute("value") == vid
                if r == 2 and seen == 1:
                    # the same rater in another tab rates this video first: the page refuses the second rating
                    req = urllib.request.Request(base + "/api/ratings", method="POST",
                                                 data=json.dumps({"rater": rater, "video": vid, **scores}).encode(),
                                                 headers={"Content-Type": "application/json"})
                    assert urllib.request.urlopen(req, timeout=10).status == 201
                for k in CRITERIA:
                    box = driver.find_element(By.ID, k)
                    box.clear()
                    box.send_keys(str(scores[k]))
                form = driver.find_element(By.ID, "rating-form")
                driver.find_element(By.ID, "send-rating").click()
                wait.until(_page_replaced(form))
                wait.until(EC.presence_of_element_located((By.ID, "progress")))
                if r == 2 and seen == 1:
                    assert "already rated" in driver.find_element(By.ID, "error").text
                else:
                    assert not driver.find_elements(By.ID, "error")
                seen += 1
            assert seen == len(truth)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    rows = store.ratings()
    assert len(rows) == 3 * len(truth) and len({(x["rater"], x["video"]) for x in rows}) == len(rows)
    for x in rows:
        expect = _scores(*truth[x["video"]], ["ann", "bob", "cy"].index(x["rater"]))
        assert {k: x[k] for k in CRITERIA} == pytest.approx(expect)
    summary = main(["report", "--db", str(db), "--out", str(tmp_path / "report")])
    _check_report(summary)
    assert json.loads((tmp_path / "report" / "human_eval.json").read_text())["models"]["full"]["quality"]["alpha"] \
        == pytest.approx(0.5)
    table = (tmp_path / "report" / "human_eval.md").read_text()
    assert "| full | quality | 0.600 | ± 1.271 [-0.671, 1.871] | 3 | 2 | 6 | 0.500 |" in table
    assert "| no_temp_lora | adherence | 0.500 | ± 0.000 [0.500, 0.500] | 3 | 2 | 6 | -0.250 |" in table
    assert (tmp_path / "report" / "human_eval.png").stat().st_size > 0


# ------------------------------------------------------------------------------- kill mid-study
def _start_server(videos: Path, db: Path, log: Path) -> tuple[subprocess.Popen, str]:
    log_file = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.human_eval", "serve", "--videos", str(videos),
                             "--db", str(db), "--host", "127.0.0.1", "--port", "0"],
                            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"raters open (http://127\.0\.0\.1:\d+)/", log.read_text())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start: {log.read_text()}")


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/api/ratings", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _next(url: str, rater: str) -> str | None:
    with urllib.request.urlopen(f"{url}/api/next?rater={rater}", timeout=10) as r:
        return json.loads(r.read())["video"]


def test_server_killed_mid_study_loses_and_duplicates_nothing(study_videos, tmp_path):
    db = tmp_path / "ratings.sqlite"
    raters = ["ann", "bob", "cy"]
    proc, url = _start_server(study_videos, db, tmp_path / "serve1.log")
    sent: dict[tuple[str, str], dict] = {}  # every rating a rater submitted (answered or not)
    acked: set[tuple[str, str]] = set()  # the ones the server answered 201
    lock = threading.Lock()
    stop = threading.Event()
    errors: list = []

    halfway = threading.Barrier(len(raters) + 1, timeout=30)  # the raters and the killer

    def rate(rater: str, index: int) -> None:
        mine = 0
        for _ in range(8):  # bounded: 4 videos per rater
            if stop.is_set():
                return
            try:
                if mine == 2:  # every rater is halfway: the kill comes while they go on
                    halfway.wait()
                video = _next(url, rater)
                if video is None:
                    return
                body = {"rater": rater, "video": video, "quality": round(0.1 * index + 0.01 * len(sent), 2),
                        "coherence": 0.5, "adherence": 0.25}
                with lock:
                    sent[rater, video] = body
                status, answer = _post(url, body)
                if status != 201:
                    errors.append((body, status, answer))
                    return
                with lock:
                    acked.add((rater, video))
                mine += 1
            except (urllib.error.URLError, ConnectionError, OSError, http.client.HTTPException):
                return  # the server is gone (mid-answer too: IncompleteRead)
            except threading.BrokenBarrierError as err:
                errors.append(err)
                return

    try:
        threads = [threading.Thread(target=rate, args=(r, i), daemon=True) for i, r in enumerate(raters)]
        for t in threads:
            t.start()
        halfway.wait()
        deadline = time.monotonic() + 20
        while len(sent) < 7 and time.monotonic() < deadline:  # a rating has just been sent
            time.sleep(0.0005)
        os.kill(proc.pid, signal.SIGKILL)  # mid-study, with the raters' requests under way
        proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        assert not errors, errors
        assert 6 <= len(acked) < len(raters) * 4, "the kill did not land mid-study"
        before = {v["id"] for v in Store(db).videos()}
        with sqlite3.connect(db) as conn:
            stored = {(r, v) for r, v in conn.execute("SELECT rater, video FROM ratings")}
        assert acked <= stored  # nothing the server acknowledged is lost
        assert stored <= set(sent)

        proc, url = _start_server(study_videos, db, tmp_path / "serve2.log")
        assert {v["id"] for v in Store(db).videos()} == before  # same opaque ids after the restart
        # every rater's browser sends everything again: stored ones are refused as duplicates, lost ones land
        for key, body in sent.items():
            status, answer = _post(url, body)
            if key in stored:
                assert status == 400 and "already rated" in answer["error"], answer
            else:
                assert status == 201, answer
        # and the study goes on to the end
        for i, rater in enumerate(raters):
            while (video := _next(url, rater)) is not None:
                assert (rater, video) not in sent and len(sent) < 12, "a stored rating is not counted"
                sent[rater, video] = body = {"rater": rater, "video": video, "quality": 0.9, "coherence": 0.1,
                                             "adherence": 1.0}
                assert _post(url, body)[0] == 201
        with urllib.request.urlopen(url + "/api/progress", timeout=10) as r:
            progress = json.loads(r.read())
        assert progress == {"videos": 4, "complete": 4, "min_ratings": 3, "ratings": 12, "raters": 3}
    finally:
        stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    rows = Store(db).ratings()
    assert len(rows) == len(sent) == 12  # none lost, none twice
    for x in rows:
        assert {k: x[k] for k in ("rater", "video", *CRITERIA)} == sent[x["rater"], x["video"]]
