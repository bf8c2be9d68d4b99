"""Per-run evaluation report: JSON numbers, one self-contained HTML page, a Markdown model card.

- build.py: collects a run's numbers from ML Metadata and its artifacts (JSON-able dict);
- html.py: renders the HTML page (inline CSS and SVG, no network);
- model_card.py: renders the model card;
- __main__.py: ``python -m components.report --pipeline-root outputs/pipeline_root [--run-id ID]``.
"""
