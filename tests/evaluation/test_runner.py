"""The runner: resumable, cached, parallel for thread-safe generators, calibration rows."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from mmedrag.config import Component, Config, IndexConfig
from mmedrag.evaluation.cache import CachingGenerator, GenerationCache
from mmedrag.evaluation.runner import Runner, read_rows
from mmedrag.evaluation.tasks import resolve_tasks
from mmedrag.evaluation.variants import parse_variants
from mmedrag.generation.echo import EchoGenerator
from mmedrag.pipeline import Pipeline


class CountingGenerator(EchoGenerator):
    """The echo generator, counting calls per prompt; optionally interrupts at call N."""

    thread_safe = True

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__(name="counting")
        self.calls: dict[str, int] = {}
        self.stop_after = stop_after
        self._lock = threading.Lock()

    def generate(self, messages: list[dict[str, Any]], images: list[Any] | None = None,
                 params: Any = None) -> Any:
        with self._lock:
            if self.stop_after is not None and sum(self.calls.values()) >= self.stop_after:
                raise KeyboardInterrupt  # what Ctrl-C does mid-run
            key = json.dumps(messages)
            self.calls[key] = self.calls.get(key, 0) + 1
        return super().generate(messages, images, params)


def _questions(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "questions.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"q{i}", "question": f"Is finding {i} present?",
                                     "answer": "yes" if i % 3 else "no",
                                     "organ": "CHEST" if i % 2 else "HEAD"}) + "\n")
    return path


def _pipeline(generator: Any, index: Any = None) -> Pipeline:
    cfg = Config(generator=Component(name="echo"),
                 index=IndexConfig(text_encoder=Component(name="hashing")))
    return Pipeline(cfg, index, generator=generator)


def test_interrupted_1000_sample_run_resumes_without_recomputing(tmp_path: Path) -> None:
    tasks = resolve_tasks(f"vqa-closed={_questions(tmp_path, 1000)}")
    out = tmp_path / "run"
    first = CountingGenerator(stop_after=437)
    with pytest.raises(KeyboardInterrupt):
        Runner(_pipeline(first), tasks, out, parse_variants("no-rag"), progress=False).run()
    assert len(read_rows(out)) == 437
    second = CountingGenerator()
    runner = Runner(_pipeline(second), tasks, out, parse_variants("no-rag"), progress=False)
    metrics = runner.run()
    assert sum(second.calls.values()) == 1000 - 437
    assert not set(first.calls) & set(second.calls), "a finished sample was generated again"
    rows = read_rows(out)
    assert len(rows) == 1000 and len({r["id"] for r in rows}) == 1000
    assert metrics["run"]["skipped_already_done"] == 437 and metrics["run"]["computed"] == 563
    third = CountingGenerator()
    Runner(_pipeline(third), tasks, out, parse_variants("no-rag"), progress=False).run()
    assert third.calls == {} and len(read_rows(out)) == 1000


def test_cache_serves_a_fresh_run_dir_and_respects_generator_config(tmp_path: Path) -> None:
    tasks = resolve_tasks(f"vqa-closed={_questions(tmp_path, 30)}")
    cache = tmp_path / "shared.sqlite"
    gen = CountingGenerator()
    Runner(_pipeline(gen), tasks, tmp_path / "a", parse_variants("no-rag"), progress=False,
           cache_path=cache).run()
    again = CountingGenerator()
    metrics = Runner(_pipeline(again), tasks, tmp_path / "b", parse_variants("no-rag"),
                     progress=False, cache_path=cache).run()
    assert again.calls == {} and metrics["run"]["cache_hits"] == 30
    assert all(r["cache_hit"] for r in read_rows(tmp_path / "b"))
    other = CachingGenerator(EchoGenerator(name="other"), GenerationCache(cache))
    other.generate([{"role": "user", "content": "Is finding 1 present?"}])
    assert other.misses == 1  # a different generator config never reuses another's output


def test_parallel_workers_give_the_same_rows(tmp_path: Path) -> None:
    tasks = resolve_tasks(f"vqa-closed={_questions(tmp_path, 40)}")
    Runner(_pipeline(CountingGenerator()), tasks, tmp_path / "seq", parse_variants("no-rag"),
           progress=False).run()
    Runner(_pipeline(CountingGenerator()), tasks, tmp_path / "par", parse_variants("no-rag"),
           workers=4, progress=False).run()
    key = lambda r: (r["id"], r["raw"], r["correct"])  # noqa: E731
    sequential = sorted(map(key, read_rows(tmp_path / "seq")))
    assert sequential == sorted(map(key, read_rows(tmp_path / "par")))


def test_ablation_calibration_rows_and_diagnostics(tmp_path: Path, sample_dir: Path,
                                                   hashing_index: Any) -> None:
    tasks = resolve_tasks(f"vqa-closed={sample_dir / 'questions.jsonl'}")
    out = tmp_path / "abl"
    metrics = Runner(_pipeline(EchoGenerator(), hashing_index), tasks, out,
                     parse_variants("no-rag,rag", calibration_ks="1,3"), copy_reference=True,
                     progress=False).run()
    entry = metrics["tasks"]["vqa-closed"]
    assert set(entry["variants"]) == {"no-rag", "rag", "fixed-1", "fixed-3"}
    n = entry["variants"]["rag"]["metrics"]["n"]
    rag_rows = [r for r in read_rows(out) if r["variant"] == "fixed-3"]
    assert all(len(r["evidence"]) <= 3 and r["evidence"] for r in rag_rows)
    calibration = [json.loads(x) for x in (out / "calibration.jsonl").read_text().splitlines()]
    assert len(calibration) == 2 * n and {c["k"] for c in calibration} == {1, 3}
    over = entry["over_reliance"]["rag"]
    assert over["paired"] == n
    assert over["correct_without_rag"] + over["wrong_without_rag"] == n
    assert entry["variants"]["rag"]["copy_reference"]["probed"] > 0
    usage = entry["variants"]["rag"]["usage"]
    assert usage["tokens_in_mean"] > entry["variants"]["no-rag"]["usage"]["tokens_in_mean"]
    lo, hi = entry["variants"]["rag"]["ci95"]["accuracy"]
    assert lo <= entry["variants"]["rag"]["metrics"]["accuracy"] <= hi


def test_prices_turn_tokens_into_dollars(tmp_path: Path) -> None:
    tasks = resolve_tasks(f"vqa-closed={_questions(tmp_path, 5)}")
    pipe = _pipeline(CountingGenerator())
    pipe.config = pipe.config.model_copy(
        update={"prices": {"counting": {"input_per_1m": 2.0, "output_per_1m": 10.0}}})
    metrics = Runner(pipe, tasks, tmp_path / "p", parse_variants("no-rag"), progress=False).run()
    usage = metrics["tasks"]["vqa-closed"]["variants"]["no-rag"]["usage"]
    expected = (usage["tokens_in_total"] * 2.0 + usage["tokens_out_total"] * 10.0) / 1e6
    assert usage["cost_total_usd"] == pytest.approx(expected) and expected > 0
    assert usage["unpriced_models"] == []


def test_retrieval_and_domain_tasks_use_the_retrieval_metrics(tmp_path: Path,
                                                               sample_dir: Path) -> None:
    from mmedrag.evaluation.corpora import pubmedqa_corpus
    from mmedrag.index import Index

    folder = tmp_path / "data" / "pubmedqa"
    folder.mkdir(parents=True)
    topics = ["statin therapy lowers cholesterol", "appendicitis diagnosis by ultrasound",
              "malaria parasites in red blood cells", "knee osteoarthritis exercise therapy"]
    items = {str(100 + i): {"QUESTION": f"Does {t.split()[0]} matter?",
                            "CONTEXTS": [f"We studied {t}. " * 3]} for i, t in enumerate(topics)}
    (folder / "ori_pqal.json").write_text(json.dumps(items))
    (folder / "test_ground_truth.json").write_text(json.dumps({k: "yes" for k in items}))
    index = Index.open(tmp_path / "idx", create=True,
                       config=IndexConfig(text_encoder=Component(name="hashing"),
                                          image_encoder=None))
    index.add(pubmedqa_corpus(tmp_path / "data"))
    out = tmp_path / "ret"
    metrics = Runner(_pipeline(EchoGenerator(), index), resolve_tasks("pubmedqa-retrieval"), out,
                     parse_variants("no-rag,rag"), data_root=tmp_path / "data",
                     progress=False).run()
    entry = metrics["tasks"]["pubmedqa-retrieval"]
    assert list(entry["variants"]) == ["retrieval"]  # one generation-free pass
    result = entry["variants"]["retrieval"]["metrics"]
    assert result["n"] == 4 and result["R@1"] >= 0.5 and result["R@10"] == 1.0
    assert 0 < result["MRR"] <= 1


def test_http_generators_count_as_thread_safe() -> None:
    from mmedrag.evaluation.cache import is_thread_safe
    from mmedrag.generation.openai_compat import OpenAICompatGenerator

    assert is_thread_safe(OpenAICompatGenerator.__new__(OpenAICompatGenerator))
    assert not is_thread_safe(EchoGenerator())
    assert is_thread_safe(CountingGenerator())


def test_metrics_cover_this_invocation_and_reports_compare_like_for_like(tmp_path: Path) -> None:
    from mmedrag.evaluation.report import load_metrics

    tasks = resolve_tasks(f"vqa-closed={_questions(tmp_path, 20)}")
    out = tmp_path / "grow"
    Runner(_pipeline(CountingGenerator()), tasks, out, parse_variants("no-rag"), limit=12,
           progress=False).run()
    gen = CountingGenerator()
    metrics = Runner(_pipeline(gen), tasks, out, parse_variants("no-rag"), limit=5,
                     progress=False).run()
    assert gen.calls == {}  # a smaller limit is already done
    assert metrics["tasks"]["vqa-closed"]["variants"]["no-rag"]["metrics"]["n"] == 5
    rows = read_rows(out)
    extra = [dict(r, variant="other") for r in rows[:3]]  # a second variant, mid-run
    with open(out / "rows.jsonl", "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in extra)
    report = load_metrics(out)["tasks"]["vqa-closed"]["variants"]
    assert {v: s["metrics"]["n"] for v, s in report.items()} == {"no-rag": 3, "other": 3}


def test_a_torn_last_row_is_recomputed_and_never_corrupts_the_next(tmp_path: Path) -> None:
    tasks = resolve_tasks(f"vqa-closed={_questions(tmp_path, 6)}")
    out = tmp_path / "torn"
    Runner(_pipeline(CountingGenerator()), tasks, out, parse_variants("no-rag"),
           progress=False).run()
    text = (out / "rows.jsonl").read_text(encoding="utf-8")
    (out / "rows.jsonl").write_text(text[: text.rstrip("\n").rfind("\n") + 40], encoding="utf-8")
    gen = CountingGenerator()
    metrics = Runner(_pipeline(gen), tasks, out, parse_variants("no-rag"), progress=False).run()
    assert metrics["run"]["computed"] == 1  # only the torn row is redone ...
    assert gen.calls == {} and metrics["run"]["cache_hits"] == 1  # ... from the cache
    assert sorted(r["id"] for r in read_rows(out)) == [f"q{i}" for i in range(6)]
