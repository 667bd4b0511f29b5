"""``mmedrag eval report RUN_DIR``: report.html plus PNG plots from a run directory.

Plots (matplotlib, Agg): ``ablation.png`` (headline metric per variant with 95 % CIs and the
majority-class baseline), ``pareto.png`` (headline metric vs dollars and vs seconds per sample,
with the Pareto front, MedAgentsBench style), ``domains.png`` (per-domain breakdown). The HTML
holds the metric table with CIs, usage, the factuality diagnostics and the worst examples with
the evidence they were shown.

Example:
    >>> paths = write_report("runs/offline/vqa-rad")          # doctest: +SKIP
    >>> paths["html"].name                                     # doctest: +SKIP
    'report.html'
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from mmedrag.errors import UsageError
from mmedrag.evaluation.aggregate import aggregate_run, paired_rows
from mmedrag.evaluation.runner import read_rows

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}"
        "td.l,th.l{text-align:left}.ev{font-size:12px;color:#444}.cited{font-weight:bold}"
        "img{max-width:100%;border:1px solid #eee}")


def load_metrics(run_dir: Path) -> dict[str, Any]:
    """Metrics recomputed from rows.jsonl (the truth, also mid-run), with run info kept."""
    rows = read_rows(run_dir)
    saved_path, info_path = run_dir / "metrics.json", run_dir / "run.json"
    saved = json.loads(saved_path.read_text(encoding="utf-8")) if saved_path.exists() else {}
    if not rows:
        if saved:
            return saved
        raise UsageError(f"{run_dir}: no rows.jsonl / metrics.json (is this a run directory?)")
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    prices = (info.get("config") or {}).get("prices") or saved.get("prices") or {}
    paired = paired_rows(rows)
    metrics = aggregate_run(paired, prices=prices)
    metrics["run"] = {**saved.get("run", {}), "rows": len(rows), "rows_paired": len(paired)}
    return metrics


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _with_ci(value: Any, ci: list[float] | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _points(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for task, entry in metrics["tasks"].items():
        for variant, s in entry["variants"].items():
            primary = entry["primary"]
            out.append({"task": task, "variant": variant, "primary": primary,
                        "value": s["metrics"].get(primary), "ci": s["ci95"].get(primary),
                        "baseline": s["metrics"].get("majority_baseline"),
                        "cost": s["usage"]["cost_per_sample_usd"],
                        "tokens": s["usage"]["tokens_in_mean"] + s["usage"]["tokens_out_mean"],
                        "seconds": s["usage"]["seconds_mean"], "n": s["metrics"].get("n")})
    return out


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ablation(metrics: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    tasks = list(metrics["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        pts = [p for p in _points(metrics) if p["task"] == task and p["value"] is not None]
        xs = range(len(pts))
        errs = [[max(0.0, p["value"] - p["ci"][0]) if p["ci"] else 0 for p in pts],
                [max(0.0, p["ci"][1] - p["value"]) if p["ci"] else 0 for p in pts]]
        ax.bar(xs, [p["value"] for p in pts], yerr=errs, capsize=4, color="#4c78a8")
        baselines = [p["baseline"] for p in pts if p["baseline"] is not None]
        if baselines:
            ax.axhline(baselines[0], ls="--", color="#e45756", label="majority class")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(list(xs), [f"{p['variant']}\nn={p['n']}" for p in pts], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel(pts[0]["primary"] if pts else "")
    fig.suptitle("Headline metric per variant (95 % bootstrap CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pareto front: lowest x for each gain in y."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def plot_pareto(metrics: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    pts = [p for p in _points(metrics) if p["value"] is not None]
    priced = any(p["cost"] > 0 for p in pts)
    cost_key, cost_label = (("cost", "dollars per sample") if priced else
                            ("tokens", "tokens per sample (in + out; no prices in the config)"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], cost_key, cost_label),
                           (axes[1], "seconds", "wall seconds per sample")):
        for task in sorted({p["task"] for p in pts}):
            mine = [p for p in pts if p["task"] == task]
            dots = ax.scatter([p[key] for p in mine], [p["value"] for p in mine], label=task)
            for p in mine:
                ax.annotate(p["variant"], (p[key], p["value"]), fontsize=7,
                            textcoords="offset points", xytext=(4, 3))
            front = _front([(p[key], p["value"]) for p in mine])
            ax.plot([f[0] for f in front], [f[1] for f in front], lw=1, alpha=0.6,
                    color=dots.get_facecolor()[0])
        ax.set_xlabel(label)
        ax.set_ylabel("headline metric")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Headline metric vs cost and latency (line: Pareto front per task)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_domains(metrics: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    tasks = list(metrics["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        entry = metrics["tasks"][task]
        variants = list(entry["variants"])
        domains = sorted({d for v in variants for d in entry["variants"][v]["per_domain"]})
        width = 0.8 / max(1, len(variants))
        for i, variant in enumerate(variants):
            per = entry["variants"][variant]["per_domain"]
            ax.bar([j + i * width for j in range(len(domains))],
                   [per.get(d, {}).get(entry["primary"]) or 0 for d in domains], width,
                   label=variant)
        first = entry["variants"][variants[0]]["per_domain"]
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(domains))],
                      [f"{d}\nn={first.get(d, {}).get('n', 0)}" for d in domains], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{task}: {entry['primary']} by domain", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _metric_table(metrics: dict[str, Any]) -> str:
    head = ("<tr><th class=l>task</th><th class=l>variant</th><th>n</th><th>headline [95% CI]</th>"
            "<th>majority baseline</th><th>other metrics</th><th>tokens in / out</th>"
            "<th>s / sample</th><th>$ / sample</th><th>evidence support (cited / shown)</th></tr>")
    rows = []
    for task, entry in metrics["tasks"].items():
        for variant, s in entry["variants"].items():
            m, primary = s["metrics"], entry["primary"]
            others = ", ".join(f"{k} {_fmt(v)}" for k, v in m.items()
                               if k not in (primary, "n", "majority_baseline", "majority_label")
                               and isinstance(v, float))
            u, ev = s["usage"], s["evidence"]
            rows.append(
                f"<tr><td class=l>{task}</td><td class=l>{variant}</td><td>{m.get('n')}</td>"
                f"<td>{primary} {_with_ci(m.get(primary), s['ci95'].get(primary))}</td>"
                f"<td>{_fmt(m.get('majority_baseline'))} ({_fmt(m.get('majority_label'))})</td>"
                f"<td class=l>{others}</td>"
                f"<td>{u['tokens_in_mean']:.0f} / {u['tokens_out_mean']:.1f}</td>"
                f"<td>{u['seconds_mean']:.2f}</td><td>{u['cost_per_sample_usd']:.6f}</td>"
                f"<td>{_fmt(ev['support_rate_cited'])} / "
                f"{_fmt(ev['support_rate_shown'])}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _diagnostics(metrics: dict[str, Any]) -> str:
    parts = []
    for task, entry in metrics["tasks"].items():
        for variant, o in (entry.get("over_reliance") or {}).items():
            parts.append(
                f"<li>{task} / {variant}: over-reliance {_fmt(o['over_reliance'])} "
                f"({o['over_reliance_count']} of {o['correct_without_rag']} samples correct "
                f"without RAG became wrong with it); rescue {_fmt(o['rescue'])} "
                f"({o['rescue_count']} of {o['wrong_without_rag']} wrong without RAG)</li>")
        for variant, s in entry["variants"].items():
            c = s.get("copy_reference")
            if c:
                parts.append(
                    f"<li>{task} / {variant}: copy-reference {_fmt(c['copy_reference_rate'])} of "
                    f"{c['probed']}; of those correct with the real image "
                    f"{_fmt(c['copy_reference_rate_of_correct'])} (generator sees images: "
                    f"{c['image_seen']})</li>")
    return "<ul>" + "".join(parts) + "</ul>" if parts else "<p>No paired no-RAG run.</p>"


def _worst(rows: list[dict[str, Any]], limit: int = 8) -> str:
    out = []
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("variant") != "no-rag" and row.get("evidence") is not None:
            by_task.setdefault(row["task"], []).append(row)
    for task, items in by_task.items():
        wrong = [r for r in items if r.get("correct") is False]
        if not wrong:
            wrong = sorted(items, key=lambda r: r["stats"].get("rouge_l", 1.0))
        out.append(f"<h3>{html.escape(task)}</h3><table><tr><th class=l>id / variant</th>"
                   "<th class=l>question</th><th class=l>reference</th><th class=l>answer</th>"
                   "<th class=l>evidence</th></tr>")
        for r in wrong[:limit]:
            evidence = "".join(
                f"<div class='ev{' cited' if e.get('cited') else ''}'>[{e['n']}] "
                f"{html.escape(e['id'])} ({e['score']}): "
                f"{html.escape(e.get('text', '')[:240])}</div>"
                for e in r.get("evidence", [])[:5])
            out.append(f"<tr><td class=l>{html.escape(r['id'])}<br>{r['variant']}</td>"
                       f"<td class=l>{html.escape(r['question'][:300])}</td>"
                       f"<td class=l>{html.escape(str(r['reference'])[:200])}</td>"
                       f"<td class=l>{html.escape(str(r.get('raw', ''))[:300])}</td>"
                       f"<td class=l>{evidence or '–'}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _combine(run_dirs: list[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and rows of several runs side by side (task names must not clash)."""
    metrics: dict[str, Any] = {"tasks": {}, "run": {}}
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UsageError(f"{run_dir}: not a directory")
        part = load_metrics(run_dir)
        clash = set(part.get("tasks", {})) & set(metrics["tasks"])
        if clash:
            raise UsageError(f"{run_dir}: task {sorted(clash)[0]} is also in another run; "
                             "report such runs separately")
        metrics["tasks"].update(part.get("tasks", {}))
        metrics["run"][run_dir.name] = part.get("run", {})
        rows.extend(read_rows(run_dir))
    if not metrics["tasks"]:
        raise UsageError(f"{run_dirs[0]}: the run has no rows yet")
    return metrics, rows


def write_report(run_dir: str | Path, *more: str | Path, out: str | Path | None = None
                 ) -> dict[str, Path]:
    """Write report.html, ablation.png, pareto.png and domains.png.

    With one run the files go into ``run_dir``; several runs (e.g. one per index) are
    reported side by side into ``out``.
    """
    run_dirs = [Path(run_dir), *(Path(m) for m in more)]
    target = Path(out) if out is not None else run_dirs[0]
    if len(run_dirs) > 1 and out is None:
        raise UsageError("several runs need --out, the folder for the combined report")
    target.mkdir(parents=True, exist_ok=True)
    metrics, rows = _combine(run_dirs)
    paths = {"ablation": plot_ablation(metrics, target / "ablation.png"),
             "pareto": plot_pareto(metrics, target / "pareto.png"),
             "domains": plot_domains(metrics, target / "domains.png")}
    title = html.escape(", ".join(d.name for d in run_dirs))
    body = (f"<h1>mmedrag evaluation: {title}</h1>"
            f"<p>{html.escape(json.dumps(metrics['run']))}</p>"
            f"<h2>Metrics</h2>{_metric_table(metrics)}"
            "<p>n counts the samples every variant of a task has answered (a run still in "
            "progress is compared like for like). CIs: percentile bootstrap over samples "
            "(1,000 resamples; 200 for text generation). Seconds are wall time on the machine "
            "that ran it.</p>"
            "<h2>Factuality diagnostics</h2>" + _diagnostics(metrics) +
            "<p>Definitions: mmedrag/evaluation/diagnostics.py.</p>"
            "<h2>Plots</h2><img src='ablation.png'><img src='pareto.png'><img src='domains.png'>"
            "<h2>Worst examples (with the evidence shown)</h2>" + _worst(rows))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>mmedrag eval "
            f"{title}</title><style>{_CSS}</style></head><body>{body}</body></html>")
    paths["html"] = target / "report.html"
    paths["html"].write_text(page, encoding="utf-8")
    return paths
