"""The rating web app (Flask): one blinded video at a time with its action captions and three 0-1 scores.

Pages: ``/`` (instructions, rater name), ``/rate?rater=NAME`` (the next video; the form posts back to
``/rate``), ``/video/<id>`` (the mp4, by opaque id only). JSON: ``GET /api/next?rater=NAME``,
``POST /api/ratings`` (``{"rater", "video", "quality", "coherence", "adherence"}``), ``GET /api/progress``.
A refused rating (a score outside [0, 1], an unknown video id, a second rating of one video by one rater,
a missing field) answers HTTP 400 with the reason, which the page shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flask import Flask, abort, jsonify, redirect, render_template_string, request, send_file, url_for

from evaluation.human_study.store import CRITERIA, CRITERIA_TEXT, RatingError, Store, check_rater

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Video rating study</title>
<style>
 body { font-family: sans-serif; max-width: 60em; margin: 1.5em auto; padding: 0 1em; }
 .error { background: #fde2e2; border: 1px solid #c00; padding: .6em 1em; color: #800; }
 .progress { color: #555; }
 video { width: 100%; max-width: 512px; image-rendering: pixelated; background: #000; }
 .criterion { margin: 1em 0; } .criterion input[type=range] { width: 20em; vertical-align: middle; }
 .criterion input[type=number] { width: 5em; }
 button { font-size: 1.1em; padding: .4em 1.5em; }
</style></head><body>
<h1>Video rating study</h1>
{% if error %}<p class="error" id="error" role="alert">{{ error }}</p>{% endif %}
{% block body %}{% endblock %}
</body></html>"""

INDEX = _BASE.replace("{% block body %}{% endblock %}", """
<p>You will see short generated videos, one at a time, each with the action prompts it was made from.
Score each video from 0 (worst) to 1 (best) on:</p>
<ul>{% for k in criteria %}<li>{{ texts[k] }}</li>{% endfor %}</ul>
<p>Watch the whole video (it loops) before you score. You rate each video once.</p>
<form method="get" action="{{ url_for('rate') }}">
 <label>Your rater name: <input type="text" name="rater" id="rater" required maxlength="64"></label>
 <button type="submit" id="start">Start</button>
</form>
<p class="progress">{{ progress.videos }} videos; {{ progress.complete }} have at least {{ progress.min_ratings }}
ratings.</p>""")

RATE = _BASE.replace("{% block body %}{% endblock %}", """
<p class="progress" id="progress">Rater <b>{{ rater }}</b>: you have rated {{ progress.rated_by_you }} of
{{ progress.videos }} videos.</p>
{% if video is none %}
<p id="done">Thank you: you have rated every video in this study.</p>
{% else %}
<video id="video" src="{{ url_for('video_file', video_id=video.id) }}" controls autoplay loop muted playsinline></video>
<h2>Action prompts</h2>
{% if video.captions %}<ol id="captions">{% for c in video.captions %}<li>{{ c }}</li>{% endfor %}</ol>
{% else %}<p id="captions">(no captions for this video)</p>{% endif %}
<form method="post" action="{{ url_for('rate') }}" id="rating-form">
 <input type="hidden" name="rater" value="{{ rater }}">
 <input type="hidden" name="video" id="video-id" value="{{ video.id }}">
 {% for k in criteria %}
 <div class="criterion"><label for="{{ k }}">{{ texts[k] }}</label><br>
  0 <input type="range" id="{{ k }}-slider" min="0" max="1" step="0.01" value="0.5"
     oninput="document.getElementById('{{ k }}').value = this.value"> 1
  <input type="number" name="{{ k }}" id="{{ k }}" min="0" max="1" step="0.01" required
     value="{{ values.get(k, '') }}" oninput="document.getElementById('{{ k }}-slider').value = this.value">
 </div>
 {% endfor %}
 <button type="submit" id="send-rating">Submit and continue</button>
</form>
{% endif %}""")


def create_app(store: Store, videos_dir: str | Path) -> Flask:
    """The app over ``store``; video files are read from ``videos_dir`` (the manifest's folder)."""
    videos_dir = Path(videos_dir).resolve()
    app = Flask(__name__)
    app.config["STORE"] = store

    def rate_page(rater: str, video: dict | None, error: str | None = None, status: int = 200,
                  values: dict | None = None):
        return render_template_string(RATE, rater=rater, video=video, error=error, criteria=CRITERIA,
                                      texts=CRITERIA_TEXT, progress=store.progress(rater),
                                      values=values or {}), status

    def index_page(error: str | None = None, status: int = 200):
        return render_template_string(INDEX, error=error, criteria=CRITERIA, texts=CRITERIA_TEXT,
                                      progress=store.progress()), status

    @app.get("/")
    def index():
        return index_page()

    @app.route("/rate", methods=["GET", "POST"])
    def rate():
        if request.method == "GET":
            try:
                rater = check_rater(request.args.get("rater"))
                return rate_page(rater, store.next_video(rater))
            except RatingError as err:
                return index_page(str(err), 400)
        form = request.form
        try:
            store.add_rating(form)
        except RatingError as err:
            try:
                rater = check_rater(form.get("rater"))
            except RatingError:
                return index_page(str(err), 400)
            video = store.video(str(form.get("video", "")).strip())
            if video is None or not video["active"] or store.has_rated(rater, video["id"]):  # show what to rate next instead
                return rate_page(rater, store.next_video(rater), str(err), 400)
            return rate_page(rater, video, str(err), 400, values={k: form.get(k, "") for k in CRITERIA})
        # post/redirect/get: a reload does not post the rating again
        return redirect(url_for("rate", rater=form["rater"].strip()), code=303)

    @app.get("/video/<video_id>")
    def video_file(video_id: str):
        video = store.video(video_id)
        if video is None:
            abort(404)
        path = (videos_dir / video["file"]).resolve()
        if videos_dir not in path.parents or not path.is_file():
            abort(404)
        return send_file(path, mimetype="video/mp4", conditional=True, etag=False, max_age=0)

    @app.get("/api/next")
    def api_next():
        try:
            video = store.next_video(request.args.get("rater"))
        except RatingError as err:
            return jsonify(error=str(err)), 400
        if video is None:
            return jsonify(video=None)
        return jsonify(video=video["id"], captions=video["captions"],
                       url=url_for("video_file", video_id=video["id"]))

    @app.post("/api/ratings")
    def api_ratings():
        data: Any = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify(error="expected a JSON object with rater, video, " + ", ".join(CRITERIA)), 400
        try:
            rating_id = store.add_rating(data)
        except RatingError as err:
            return jsonify(error=str(err)), 400
        return jsonify(ok=True, id=rating_id), 201

    @app.get("/api/progress")
    def api_progress():
        return jsonify(store.progress())

    return app


def serve(store: Store, videos_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (threaded werkzeug server); ``on_ready(url)`` once it listens.
    Port 0 picks a free port."""
    from werkzeug.serving import make_server

    server = make_server(host, port, create_app(store, videos_dir), threaded=True)
    url = f"http://{host}:{server.port}/"
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
