"""Evaluation: tasks × pipeline variants → per-sample rows, metrics with CIs, cost, plots.

Modules:
    tasks/       the task registry (``get_task``, ``resolve_tasks``), loaders, built-in tasks
    metrics      yes/no, open-answer and multiple-choice metrics; bootstrap CIs
    textmetrics  BLEU (pycocoevalcap / NLTK conventions), ROUGE-L, METEOR, BERTScore
    corpora      leakage-free retrieval corpora for VQA-RAD and PubMedQA
    cache        the on-disk generation cache
    variants     ablation variants (no-rag, fixed-K, adaptive, calibrated)
    runner       the resumable runner; ``aggregate`` and ``diagnostics`` turn rows into metrics
    report       report.html and PNG plots
    retrieval    retrieval and domain-identification metrics
"""
