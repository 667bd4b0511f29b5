"""``mmedrag demo``: a fresh install answers real radiology questions, offline, with no config.

It indexes the 36 CC0 VQA-RAD images shipped inside the package (each with its training
question–answer pairs as the "report"), trains the small image domain router when the
training module is present, then answers held-out VQA-RAD test questions about those images
with the default offline model (SmolLM2-135M-Instruct through llama.cpp).

Honesty rule: the query image's own record is EXCLUDED from retrieval, so every answer comes
from what the index knows about OTHER images. SmolLM2-135M is a tiny text-only model: the
image reaches it only through that evidence, and its answers are often wrong — the demo shows
the machinery (routing, retrieval, selection, citations, timings), not clinical accuracy.
"""

from __future__ import annotations

import json
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from mmedrag.artefacts import RouterArtefact
from mmedrag.errors import UsageError


def sample_dir() -> Path:
    """The packaged VQA-RAD sample folder."""
    return Path(str(resources.files("mmedrag") / "data" / "vqarad_sample"))


def default_out() -> Path:
    base = os.environ.get("MMEDRAG_CACHE") or str(Path.home() / ".cache" / "mmedrag")
    return Path(base) / "demo"


def pick_questions(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` questions alternating closed (yes/no) and open, on distinct images, across organs."""
    closed = [r for r in rows if str(r["answer"]).lower() in ("yes", "no")]
    open_ = [r for r in rows if str(r["answer"]).lower() not in ("yes", "no")]
    chosen: list[dict[str, Any]] = []
    images: set[str] = set()
    organs = ["CHEST", "HEAD", "ABD"]
    pools = [closed, open_]
    turn = 0
    while len(chosen) < n and (closed or open_):
        pool = pools[turn % 2] or pools[(turn + 1) % 2]
        organ = organs[len(chosen) % len(organs)]
        pick = next((r for r in pool if r["organ"] == organ and r["image"] not in images),
                    next((r for r in pool if r["image"] not in images), pool[0]))
        pool.remove(pick)
        chosen.append(pick)
        images.add(pick["image"])
        turn += 1
    return chosen


def build_demo_index(out: Path, progress: bool) -> tuple[Any, dict[str, Any]]:
    """Index the packaged sample (idempotent) and train the domain router if possible."""
    from mmedrag.config import IndexConfig
    from mmedrag.index import Index
    from mmedrag.ingest.manifest import read_manifest

    start = time.perf_counter()
    index = Index.open(out / "index", create=True, config=IndexConfig())
    summary = index.add(read_manifest(sample_dir() / "pairs.jsonl").records, progress=progress)
    info: dict[str, Any] = {"index": str(index.dir), "records": index.count(),
                            "added": summary.added, "index_seconds": time.perf_counter() - start}
    start = time.perf_counter()
    from mmedrag.training.domain import train_domain

    router_dir = out / "router"
    info["router_trained"] = not (router_dir / "router.json").exists()
    if info["router_trained"]:
        report = train_domain([sample_dir() / "pairs.jsonl"], router_dir, field="domain",
                              threshold=0.5, seed=0)
    else:
        report = json.loads((router_dir / "router.json").read_text()).get("report", {})
    index.set_artefacts(index.artefacts.model_copy(
        update={"router": RouterArtefact(path=str(router_dir))}))
    info["router"] = {"path": str(router_dir), "held_out_accuracy": report.get("accuracy_top1"),
                      "validation_images": report.get("validation")}
    info["router_seconds"] = time.perf_counter() - start
    return index, info


SCORER = ("the evaluation harness's scorers (mmedrag.evaluation.tasks.builtin): closed = the "
          "parsed yes/no equals the reference; open = exact match or every reference token in "
          "the answer (MMed-RAG's open-VQA recall)")


def _score(answer: Any, row: dict[str, Any], task: str) -> bool:
    """The harness's own verdict for one demo question (the same scorers as ``eval run``)."""
    from mmedrag.evaluation.tasks import Sample
    from mmedrag.evaluation.tasks.builtin import score_closed, score_open

    sample = Sample(id=str(row["id"]), question=row["question"],
                    reference=str(row["answer"]).lower() if task == "closed_vqa"
                    else str(row["answer"]))
    scorer = score_closed if task == "closed_vqa" else score_open
    return bool(scorer(sample, answer)["correct"])


def demo_command(
    out: Path | None = typer.Option(
        None, "--out", help="Working folder (default ~/.cache/mmedrag/demo)."),
    questions: int = typer.Option(6, "--questions", "-n", help="How many questions to answer."),
    generator: str | None = typer.Option(
        None, "--generator", "-g", help="Generator (default: llama-cpp with SmolLM2)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    """Index the packaged CC0 VQA-RAD sample and answer held-out questions about it, offline.

    Example: mmedrag demo
    """
    from mmedrag.cli.ask import quiet_progress_bars, render_answer
    from mmedrag.config import Component, Config
    from mmedrag.pipeline import Pipeline

    if questions <= 0:
        raise UsageError("--questions must be positive")
    total_start = time.perf_counter()
    quiet_progress_bars()
    out = out or default_out()
    index, info = build_demo_index(out, progress=False)
    name = generator or "llama-cpp"
    options = {"n_ctx": 1024} if name == "llama-cpp" else {}
    cfg = Config(generator=Component(name=name, options=options),
                 selector=Component(name="gap", options={"gamma": 0.05, "k_min": 1, "k_max": 2}))
    pipeline = Pipeline(cfg, index, evidence_chars=300)
    info["load_seconds"] = _warm_up(pipeline)
    info["generator"] = getattr(pipeline.generator, "name", name)
    rows = [json.loads(line) for line in
            (sample_dir() / "questions.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    pair_of = _pair_ids(sample_dir())
    results = []
    if not as_json:
        typer.echo(_header(info))
    for row in pick_questions(rows, questions):
        task = "closed_vqa" if str(row["answer"]).lower() in ("yes", "no") else "open_vqa"
        own = pair_of.get(row["image"])
        answer = pipeline.answer(row["question"], image=sample_dir() / row["image"], task=task,
                                 exclude_ids={own} if own else None)
        correct = _score(answer, row, task)
        results.append({"id": row["id"], "image": row["image"], "task": task,
                        "reference": row["answer"], "correct": correct, **answer.to_dict()})
        if not as_json:
            typer.echo(f"\n[{row['id']}] image {row['image']} ({row['organ']}), "
                       f"query image's own record excluded from retrieval")
            verdict = "matches" if correct else "does not match"
            typer.echo(render_answer(answer, gold=f"{row['answer']} ({verdict})"))
    _finish(results, info, total_start, as_json)


def _warm_up(pipeline: Any) -> float:
    """Load the encoders and the generator before the timed questions; returns seconds."""
    from mmedrag.generation.protocol import GenerationParams

    start = time.perf_counter()
    pipeline.retrieve("warm up", sample_dir() / "images" / "synpic100176.jpg")
    pipeline.generator.generate([{"role": "user", "content": "Hi"}], None,
                                GenerationParams(max_tokens=1))
    return time.perf_counter() - start


def _pair_ids(folder: Path) -> dict[str, str]:
    """Image path → id of the sample record that describes that image."""
    out: dict[str, str] = {}
    for line in (folder / "pairs.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["image"]] = row["id"]
    return out


def _header(info: dict[str, Any]) -> str:
    router = info.get("router")
    verb = "trained" if info.get("router_trained") else "reused"
    router_line = (f"domain router {verb} in {info.get('router_seconds', 0):.1f}s "
                   f"(held-out accuracy {router['held_out_accuracy']:.2f} on "
                   f"{router['validation_images']} images)" if isinstance(router, dict) else router)
    return (f"index {info['index']}: {info['records']} CC0 VQA-RAD image-report records "
            f"({info['added']} added in {info['index_seconds']:.1f}s)\n{router_line}\n"
            f"encoders and {info.get('generator', 'the generator')} loaded in "
            f"{info.get('load_seconds', 0.0):.1f}s\n"
            "Each question's own image record is excluded: answers come from other images.")


def _finish(results: list[dict[str, Any]], info: dict[str, Any], start: float,
            as_json: bool) -> None:
    seconds = time.perf_counter() - start
    generate = [r["seconds"].get("total", 0.0) for r in results]
    summary = {"questions": len(results), "matches": sum(r["correct"] for r in results),
               "scorer": SCORER, "text_parse_disagreements": sum(bool(r.get("warnings"))
                                                                  for r in results),
               "seconds_total": round(seconds, 2),
               "seconds_per_answer": round(sum(generate) / max(len(generate), 1), 2)}
    if as_json:
        typer.echo(json.dumps({"setup": info, "answers": results, "summary": summary},
                              ensure_ascii=False, default=str))
        return
    typer.echo(f"\n{summary['matches']}/{summary['questions']} answers match the reference "
               f"by {SCORER}; {summary['seconds_per_answer']:.2f}s per answer; demo total "
               f"{seconds:.1f}s")
    if summary["text_parse_disagreements"]:
        typer.echo(f"{summary['text_parse_disagreements']} closed answer(s) whose text "
                   "contradicts the parsed yes/no (see the warnings above)")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
