"""Seeded synthetic tasks that need the agent's tools, with exact answers.

* **python** tasks (``data_source="synthetic_python"``, ability ``math``): multi-digit products, modular
  exponentiation and modular products — easy with the python tool, error-prone by hand.
* **search** tasks (``data_source="synthetic_search"``, ability ``qa``): questions about invented
  organisations and people that exist only in a corpus the generator also returns (records ``{id, title,
  text}``, ready for a local search index); one-hop and two-hop (founder → birthplace) questions.

The same seed always gives the same tasks and corpus; no files or network are needed.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appo.data.prompts import PromptTemplate, get_prompt
from appo.data.readers import Example

_SYLLABLES = (
    "ka", "lor", "ven", "tri", "mal", "zo", "qu", "rin", "sel", "dra", "ith", "po", "mar", "vex", "ul",
    "bra", "nen", "cor", "fia", "gos", "tal", "mir", "osh", "pel", "dun", "ester", "ly", "sar", "wen", "hol",
)  # fmt: skip
_ORG_KINDS = (
    "Observatory",
    "Institute",
    "Library",
    "Foundry",
    "Conservatory",
    "Society",
    "Museum",
    "Academy",
)
_PROFESSIONS = (
    "astronomer",
    "engineer",
    "botanist",
    "composer",
    "cartographer",
    "chemist",
    "architect",
    "poet",
)


@dataclass
class SyntheticSet:
    """Generated tasks and the corpus that answers the search tasks."""

    examples: list[Example]
    corpus: list[dict[str, str]] = field(default_factory=list)

    def write_corpus(self, path: str | os.PathLike[str]) -> Path:
        """Write the corpus as jsonl (one ``{id, title, text}`` object per line)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", encoding="utf-8") as fh:
            for rec in self.corpus:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return p


class _Names:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, parts: int) -> str:
        return "".join(self.rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()

    def unique(self, make: Any) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("could not generate a unique name")

    def person(self) -> str:
        return self.unique(lambda: f"{self.word(2)} {self.word(self.rng.randint(2, 3))}")

    def city(self) -> str:
        return self.unique(lambda: self.word(3))

    def org(self) -> str:
        return self.unique(lambda: f"{self.word(2)} {self.rng.choice(_ORG_KINDS)}")


def _python_task(rng: random.Random, i: int) -> tuple[str, str, dict[str, Any]]:
    kind = ("product", "modpow", "modprod")[i % 3]
    if kind == "product":
        a, b = rng.randint(10**5, 10**7 - 1), rng.randint(10**5, 10**7 - 1)
        return f"What is {a} × {b}? Give the exact integer.", str(a * b), {"kind": kind, "a": a, "b": b}
    if kind == "modpow":
        a, e, m = rng.randint(2, 10**6), rng.randint(10**4, 10**6), rng.randint(10**5, 10**7)
        q = f"What is the remainder when {a}^{e} is divided by {m}? Give the exact integer."
        return q, str(pow(a, e, m)), {"kind": kind, "a": a, "e": e, "m": m}
    nums = [rng.randint(10**6, 10**9) for _ in range(3)]
    m = rng.randint(10**3, 10**5)
    q = f"What is ({nums[0]} × {nums[1]} × {nums[2]}) mod {m}? Give the exact integer."
    return q, str((nums[0] * nums[1] * nums[2]) % m), {"kind": kind, "factors": nums, "m": m}


def _entity_world(rng: random.Random, names: _Names, n: int) -> list[dict[str, Any]]:
    world = []
    for _ in range(n):
        founder = {
            "name": names.person(),
            "born": rng.randint(1650, 1950),
            "birth_city": names.city(),
            "profession": rng.choice(_PROFESSIONS),
        }
        org = {
            "name": names.org(),
            "city": names.city(),
            "founded": founder["born"] + rng.randint(25, 60),
            "founder": founder,
        }
        world.append(org)
    return world


def _docs_for(org: dict[str, Any], idx: int) -> list[dict[str, str]]:
    f = org["founder"]
    kind = org["name"].split()[-1].lower()
    org_doc = {
        "id": f"syn-org-{idx}",
        "title": org["name"],
        "text": (
            f"The {org['name']} is a {kind} in the city of {org['city']}. It was founded in {org['founded']} "
            f"by the {f['profession']} {f['name']}, who also served as its first director."
        ),
    }
    person_doc = {
        "id": f"syn-person-{idx}",
        "title": f["name"],
        "text": (
            f"{f['name']} was a {f['profession']} born in {f['born']} in {f['birth_city']}. "
            f"{f['name'].split()[0]} is best known for founding the {org['name']}."
        ),
    }
    return [org_doc, person_doc]


def _search_question(rng: random.Random, org: dict[str, Any], i: int) -> tuple[str, str, int]:
    f = org["founder"]
    choice = i % 5
    if choice == 0:
        return f"In which year was the {org['name']} founded?", str(org["founded"]), 1
    if choice == 1:
        return f"In which city is the {org['name']} located?", org["city"], 1
    if choice == 2:
        return f"Who founded the {org['name']}?", f["name"], 1
    if choice == 3:
        return f"In which city was the founder of the {org['name']} born?", f["birth_city"], 2
    return f"In what year was the founder of the {org['name']} born?", str(f["born"]), 2


def generate_synthetic(
    n_python: int = 32,
    n_search: int = 32,
    *,
    seed: int = 0,
    n_distractors: int | None = None,
    prompt: str | PromptTemplate | None = "code_search",
) -> SyntheticSet:
    """Generate ``n_python`` tool-arithmetic tasks and ``n_search`` corpus-lookup tasks.

    ``n_distractors`` extra organisations (default ``n_search``) are added to the corpus without
    questions, so a search has to pick the right document. ``prompt`` is the template whose messages are
    attached to each example (``None`` leaves ``messages`` empty).
    """
    if n_python < 0 or n_search < 0:
        raise ValueError("task counts must be non-negative")
    rng = random.Random(seed)
    template = get_prompt(prompt) if prompt is not None else None
    examples: list[Example] = []
    for i in range(n_python):
        question, answer, extra = _python_task(rng, i)
        examples.append(
            Example(
                id=f"synthetic_python-{i}",
                data_source="synthetic_python",
                question=question,
                ground_truth=answer,
                messages=template.messages(question) if template else None,
                ability="math",
                extra={"seed": seed, **extra},
            )
        )
    names = _Names(rng)
    n_extra = n_search if n_distractors is None else n_distractors
    world = _entity_world(rng, names, n_search + n_extra)
    corpus: list[dict[str, str]] = []
    for idx, org in enumerate(world):
        corpus.extend(_docs_for(org, idx))
    for i, org in enumerate(world[:n_search]):
        question, answer, hops = _search_question(rng, org, i)
        examples.append(
            Example(
                id=f"synthetic_search-{i}",
                data_source="synthetic_search",
                question=question,
                ground_truth=answer,
                messages=template.messages(question) if template else None,
                ability="qa",
                extra={"seed": seed, "hops": hops, "doc_ids": [f"syn-org-{i}", f"syn-person-{i}"][:hops]},
            )
        )
    rng.shuffle(corpus)
    return SyntheticSet(examples=examples, corpus=corpus)
