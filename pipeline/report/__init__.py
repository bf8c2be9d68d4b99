"""Per-run evaluation report: JSON numbers, one self-contained HTML page, a Markdown model card.

Part of the pipeline layer: it reads what a run recorded (pipeline.run_summary, pipeline.mlmd) by
the pipeline's node ids (pipeline.pipeline).

- build.py: collects a run's numbers from ML Metadata and its artifacts (JSON-able dict);
- eval_results.py: the Evaluator's results in report form (slices in order, curves, thresholds);
- html/: renders the HTML page (inline CSS and SVG, no network): the page in ``__init__``, the
  sections in model_sections.py and data_sections.py, plots.py, markup.py (shared cells, tables);
- model_card.py: renders the model card;
- index.py: the index of runs (<pipeline root>/reports/index.html);
- on_device.py, thumbnails.py: the on-device (TFLite) section and the error thumbnails;
- __main__.py: ``python -m pipeline.report --pipeline-root outputs/pipeline_root [--run-id ID]``.
"""
