"""The embedded source: procedurally generated, offline problems for the eight meta-training domains.

Each domain module holds three topic functions `(rng, level) -> Problem` (see `_common`); `load` spreads
`size` problems per domain evenly over the topics and levels 1-5, with worked solutions, exact answers
and the intermediate results (`steps`) that the step-accuracy metric checks.

Determinism: each (seed, split, domain) has its own random stream, seeded from a SHA-256 hash (not
Python's salted `hash`), so the same arguments give the same records on every machine, and different
splits draw different problems. A smaller `size` gives a prefix of each domain's larger list.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from metasft.data.records import DataError, Record, normalized_text
from metasft.data.sources._files import Origin
from metasft.data.sources.embedded import (
    algebra, calculus, chemistry, combinatorics, geometry, number_theory, physics, statistics,
)
from metasft.data.sources.embedded._common import Topic

ORIGIN = Origin(hub=None, local=None, get="generated here, from a seed")

DOMAINS: dict[str, dict[str, Topic]] = {
    "algebra": algebra.TOPICS,
    "geometry": geometry.TOPICS,
    "number_theory": number_theory.TOPICS,
    "combinatorics": combinatorics.TOPICS,
    "calculus": calculus.TOPICS,
    "statistics": statistics.TOPICS,
    "physics": physics.TOPICS,
    "chemistry": chemistry.TOPICS,
}
LEVELS = (1, 2, 3, 4, 5)
DEFAULT_SIZE = 1000
# Draws allowed for one new problem before a (topic, level) cell counts as exhausted.
MAX_DRAWS = 1000


def stream_seed(seed: int, split: str, domain: str) -> int:
    """The random seed of one domain's stream: a hash of (seed, split, domain)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}/{domain}".encode()).digest()[:8], "big")


def load(split: str = "train", data_root: Path | None = None, *, seed: int = 0,
         size: int | None = None) -> list[Record]:
    """`size` problems (default 1000) for each domain of DOMAINS, id `embedded/<split>/<domain>/<n>`.

    Problem n of a domain has topic n % 3 and level n % 5 + 1; as 3 and 5 are coprime, topics, levels and
    (topic, level) cells are each balanced to within one problem. No two problems in the result share a normalized text.
    `data_root` is ignored.
    """
    size = DEFAULT_SIZE if size is None else size
    if size < 0:
        raise DataError(f"embedded: size must be >= 0, got {size}")
    if not split:
        raise DataError("embedded: split must be a non-empty name such as 'train'")
    seen: set[str] = set()
    records = []
    for domain, topics in DOMAINS.items():
        rng = random.Random(stream_seed(seed, split, domain))
        names = list(topics)
        for n in range(size):
            topic, level = names[n % len(names)], LEVELS[n % len(LEVELS)]
            for _ in range(MAX_DRAWS):
                p = topics[topic](rng, level)
                key = normalized_text(p.text)
                if key not in seen:
                    break
            else:
                raise DataError(f"embedded: {domain}/{topic} level {level} ran out of distinct problems "
                                f"after {MAX_DRAWS} draws (size={size}); ask for a smaller size")
            seen.add(key)
            records.append(Record(
                id=f"embedded/{split}/{domain}/{n}", problem=p.text, solution=p.solution, answer=p.answer,
                domain=domain, subject=domain, source="embedded", level=level, topic=topic,
                answer_type="math", steps=p.steps,
            ))
    return records
