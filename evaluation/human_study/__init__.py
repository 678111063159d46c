"""Human evaluation study: raters score generated videos from 0 to 1 for quality, coherence and adherence
to the action prompts, in a browser.

- ``videos``: a folder of mp4s with a ``manifest.json`` (file, model, captions); ``import_evaluate`` makes
  one from the videos that ``experiments.evaluate --save-videos`` wrote.
- ``store``: the SQLite study database (transactional writes; one rating per rater and video).
- ``app``: the Flask web app (one blinded video at a time, three sliders; each video gets >= 3 ratings
  from different raters).
- ``report``: mean, 95% CI, raters and Krippendorff's alpha per model and criterion; markdown and a plot.

The CLI is ``python -m experiments.human_eval {import,serve,report}``.
"""

from evaluation.human_study.store import CRITERIA, RatingError, Store

__all__ = ["CRITERIA", "RatingError", "Store"]
