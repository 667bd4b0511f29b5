"""docs/gpu.md's commands are the CLI's: every ``mmedrag`` command in its bash blocks names a
subcommand that exists, with options that exist, and its config loads; the recipe covers
MMed-RAG's whole loop."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "docs" / "gpu.md"
# commands of the upstream tools the recipe names (not mmedrag's, not run by the tests)
EXTERNAL = ("python3", "pip", "hf", "export", ".venv-vllm/bin/pip", ".venv-vllm/bin/vllm",
            ". .venv/bin/activate")


def commands(text: str) -> list[str]:
    """The shell commands of the markdown's bash blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            out.extend(part.strip() for part in line.split("&&") if part.strip())
    return out


def _command_tree():  # noqa: ANN202
    import typer

    from mmedrag.cli.main import app

    return typer.main.get_command(app)


def check(argv: list[str]) -> list[str]:
    """Problems with one mmedrag command line (empty: it is the CLI's)."""
    command = _command_tree()  # typer's (vendored) click tree: groups have .commands
    words = list(argv[1:])
    path = ["mmedrag"]
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name not in command.commands:
            return [f"{' '.join(path)} has no subcommand {name!r}"]
        command = command.commands[name]
        path.append(name)
    if hasattr(command, "commands"):
        return [f"{' '.join(path)} is a group, not a command"]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    flags = {opt for p in command.params if getattr(p, "is_flag", False)
             for opt in (*p.opts, *p.secondary_opts)}
    problems = []
    for i, word in enumerate(words):
        if word.startswith("-") and not re.fullmatch(r"-?\d+(\.\d+)?", word):
            name = word.split("=", 1)[0]
            if name not in known:
                problems.append(f"{' '.join(path)}: no option {name}")
            elif name not in flags and "=" not in word and (
                    i + 1 >= len(words) or words[i + 1].startswith("--")):
                problems.append(f"{' '.join(path)}: option {name} has no value")
    if "--config" in words:
        from mmedrag.config import Config

        Config.from_yaml(REPO / words[words.index("--config") + 1])
    return problems


def test_every_mmedrag_command_in_the_recipe_exists_with_its_options() -> None:
    found = commands(RECIPE.read_text())
    mmedrag = [shlex.split(c) for c in found if c.startswith("mmedrag ")]
    others = [c for c in found if not c.startswith("mmedrag ")]
    assert len(mmedrag) >= 12
    problems = [p for argv in mmedrag for p in check(argv)]
    assert problems == []
    assert all(c.startswith(EXTERNAL) for c in others), others
    # MMed-RAG's loop, in order: index, router, per-domain CLIP fine-tuning (transformers and
    # open_clip), retrieval evaluation, answering, evaluation with and without RAG, RAG-PT
    # pairs, DPO with the paper preset, evaluation of the tuned model
    steps = [" ".join(argv[1:3]) for argv in mmedrag]
    for step in ("index", "train domain", "train retriever", "eval retrieval",
                 "ask --index", "eval run", "prefs build", "train dpo", "eval report"):
        assert any(s.startswith(step) for s in steps), step
    retrievers = [argv for argv in mmedrag if argv[1:3] == ["train", "retriever"]]
    models = {argv[argv.index("--model") + 1].split(":")[0] for argv in retrievers}
    assert models == {"hf", "open_clip"}
    assert {argv[argv.index("--domain") + 1] for argv in retrievers} == {"CT", "MR"}
    dpo = next(argv for argv in mmedrag if argv[1:3] == ["train", "dpo"])
    assert dpo[dpo.index("--preset") + 1] == "paper"
    runs = [argv for argv in mmedrag if argv[1:3] == ["eval", "run"]]
    assert all("no-rag" in argv[argv.index("--ablation") + 1] for argv in runs)


@pytest.mark.parametrize(("line", "problem"), [
    ("mmedrag train retriever m.jsonl --modle hf:x", "no option --modle"),
    ("mmedrag trian dpo", "has no subcommand 'trian'"),
    ("mmedrag eval run --task", "option --task has no value"),
])
def test_the_checker_catches_wrong_commands(line: str, problem: str) -> None:
    assert any(problem in p for p in check(shlex.split(line)))
