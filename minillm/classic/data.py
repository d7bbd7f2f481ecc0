"""Gold-segmented, tagged Chinese sentences from the story world (data for Happy LLM 1.3.1 and 1.4.4).

The world generator (``minillm/data/world.py``) writes its Chinese stories as plain text:
it knows which words it put in, but the text has no spaces. Here we render stories of the
same world, with the same lexicon (``NAMES``, ``PLACES``, ``OBJECTS``, ``ANIMALS``, ``COLOURS``,
``CITIES``, ``TIMES``) and the same sentence patterns as the world's Chinese templates, but
written as *word lists*: the gold segmentation comes for free, and so does a tag for every
word (which lexicon list it came from), used by the ELMo probe of 1.4.4.

The split (``split="train"`` / ``"heldout"``) keeps some names and objects out of training
altogether, so the held-out stories contain words that a dictionary built from the training
stories has never seen (out-of-vocabulary, OOV):

* 6 of the world's 24 names and 5 of its 20 objects appear only in held-out stories;
* held-out stories also use 12 *synthetic* names made by recombining characters of the
  world's names (e.g. "莉姆", the first character of 莉莉 and the last of 汤姆): new
  words built from known characters, as real Chinese names are.

Function words (了, 在, 遇到, ...) are segmented by hand in the patterns below, following
the usual PKU-corpus conventions (aspect particle 了 and measure words stand alone).
"""
from __future__ import annotations

import random
from typing import Iterator, List, Tuple

from ..data.world import ANIMALS, CITIES, COLOURS, NAMES, OBJECTS, PLACES, TIMES, get_world

__all__ = [
    "TAGS", "segmented_stories", "analogy_questions", "word_categories", "train_heldout_lexicon", "synthetic_names", "HELDOUT_NAMES", "HELDOUT_OBJECTS",
]

#: Word tags for the token-level probe (1.4.4): which part of the world a word names.
TAGS = ("O", "NAME", "PLACE", "OBJECT", "ANIMAL", "COLOUR", "CITY")

# Indices held out of training: every 4th name (6 of 24) and every 4th object (5 of 20).
HELDOUT_NAMES = tuple(range(3, len(NAMES), 4))
HELDOUT_OBJECTS = tuple(range(3, len(OBJECTS), 4))

# Time phrases, segmented: 有一天 -> 有 / 一天, 午饭后 -> 午饭 / 后.
_TIME_WORDS = {"有一天": ["有", "一天"], "午饭后": ["午饭", "后"]}

# The world's Chinese sentence patterns (world.py GO_TEMPLATES, MEET_TEMPLATES, ...), one list of
# words per pattern. Upper-case slots are filled from the lexicon: T time, A/B names,
# P place, MW measure word, ANI animal, COL colour, OBJ object, CITY city, HE pronoun.
_PATTERNS = {
    "go": [
        ["T", "，", "A", "去", "了", "P", "。"],
        ["T", "，", "A", "走路", "去", "了", "P", "。"],
        ["T", "，", "A", "坐", "公交车", "去", "了", "P", "。"],
    ],
    "meet": [
        ["A", "在", "那里", "遇到", "了", "B", "。"],
        ["在", "P", "，", "A", "遇到", "了", "朋友", "B", "。"],
    ],
    "see": [
        ["A", "看到", "了", "一", "MW", "ANI", "。"],
        ["A", "在", "那里", "看到", "了", "一", "MW", "ANI", "。"],
    ],
    "buy": [["A", "买", "了", "一", "MW", "COL", "的", "OBJ", "。"]],
    "find": [
        ["A", "在", "地上", "找到", "了", "一", "MW", "COL", "的", "OBJ", "。"],
        ["A", "在", "树下", "找到", "了", "一", "MW", "COL", "的", "OBJ", "。"],
    ],
    "weather": [
        ["那天", "阳光明媚", "。"], ["那天", "在", "下雨", "。"], ["那天", "风", "很", "冷", "。"],
        ["天上", "有", "很多", "云", "。"],
    ],
    "end": [
        ["然后", "HE", "回家", "了", "。"],
        ["晚上", "，", "A", "高高兴兴", "地", "回家", "了", "。"],
        ["A", "度过", "了", "愉快", "的", "一天", "。"],
    ],
    "home": [["A", "住", "在", "CITY", "。"]],
    "give": [["A", "把", "OBJ", "送给", "了", "B", "。"]],
    "pet": [["A", "养", "了", "一", "MW", "ANI", "。"]],
    "fav": [["A", "最", "喜欢", "的", "颜色", "是", "COL", "。"]],
}


def synthetic_names(n: int = 12) -> List[str]:
    """``n`` new two-character names: first character of one world name + last of another.

    Deterministic; never equal to a world name.

    >>> synthetic_names(3)
    ['莉姆', '安勃', '杰得']
    """
    real = {zh for _, zh, _ in NAMES}
    firsts = [zh[0] for _, zh, _ in NAMES]
    lasts = [zh[-1] for _, zh, _ in NAMES]
    out: List[str] = []
    for i in range(1, len(NAMES)):
        for k in range(len(NAMES)):
            j = (5 * i + k) % len(NAMES)  # spread the second characters over all names
            cand = firsts[i] + lasts[j]
            if cand not in real and cand not in out and firsts[i] != lasts[j] and len(set(cand)) == 2:
                out.append(cand)
                break
        if len(out) == n:
            return out
    raise ValueError(f"synthetic_names: can make at most {len(out)} names, asked for {n}")


def train_heldout_lexicon(split: str) -> dict:
    """Names (Chinese, with gender) and objects a split's stories draw from.

    "train": the 18 training names and 15 training objects. "heldout": all 24 world names
    plus 12 synthetic names, and all 20 objects, so held-out stories mix known and new words.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if split == "train":
        names = [(NAMES[i][1], NAMES[i][2]) for i in range(len(NAMES)) if i not in HELDOUT_NAMES]
        objects = [OBJECTS[i] for i in range(len(OBJECTS)) if i not in HELDOUT_OBJECTS]
    else:
        names = [(zh, g) for _, zh, g in NAMES] + [(s, "mf"[k % 2]) for k, s in enumerate(synthetic_names())]
        objects = list(OBJECTS)
    return {"names": names, "objects": objects}


def _story(rng: random.Random, lex: dict, heldout: bool) -> Tuple[List[str], List[str]]:
    names, objects = lex["names"], lex["objects"]
    if heldout:  # every held-out story features at least one held-out or synthetic name
        new = [n for n in names if n[0] not in {NAMES[i][1] for i in range(len(NAMES)) if i not in HELDOUT_NAMES}]
        a = rng.choice(new)
    else:
        a = rng.choice(names)
    b = rng.choice([n for n in names if n != a])
    place = rng.randrange(len(PLACES))
    words: List[str] = []
    tags: List[str] = []

    def sentence(kind: str) -> None:
        pat = rng.choice(_PATTERNS[kind])
        obj = rng.choice(objects)
        ani = rng.choice(ANIMALS)
        col = rng.choice(COLOURS)[1]
        who = b if kind in ("see", "buy", "find") and rng.random() < 0.3 else a
        for slot in pat:
            if slot == "T":
                t = rng.choice(TIMES)[1]
                for w in _TIME_WORDS.get(t, [t]):
                    words.append(w), tags.append("O")
            elif slot == "A":
                words.append(who[0]), tags.append("NAME")
            elif slot == "B":
                words.append((a if who is b else b)[0]), tags.append("NAME")
            elif slot == "HE":
                words.append("他" if who[1] == "m" else "她"), tags.append("O")
            elif slot == "P":
                words.append(PLACES[place][1]), tags.append("PLACE")
            elif slot == "MW":
                words.append(ani[2] if "ANI" in pat else obj[2]), tags.append("O")
            elif slot == "ANI":
                words.append(ani[1]), tags.append("ANIMAL")
            elif slot == "COL":
                words.append(col), tags.append("COLOUR")
            elif slot == "OBJ":
                words.append(obj[1]), tags.append("OBJECT")
            elif slot == "CITY":
                words.append(rng.choice(CITIES)[1]), tags.append("CITY")
            else:
                words.append(slot), tags.append("O")

    kinds = ["home"] if rng.random() < 0.3 else []
    kinds.append("go")
    if rng.random() < 0.7:
        kinds.append("meet")
    middle = ["see", "buy", "find", "weather", "pet", "fav", "give"]
    rng.shuffle(middle)
    kinds += middle[: rng.randint(1, 4)]
    if rng.random() < 0.5:
        kinds.append("end")
    for kind in kinds:
        sentence(kind)
    return words, tags


def segmented_stories(n: int, seed: int = 0, split: str = "train") -> Iterator[Tuple[List[str], List[str]]]:
    """``n`` Chinese stories as (words, tags): the gold segmentation and a tag from ``TAGS`` per word.

    ``"".join(words)`` is the story's text. Deterministic for (seed, split); the two splits
    use different random streams and different name/object sets (``train_heldout_lexicon``).
    """
    if n < 0:
        raise ValueError(f"segmented_stories: n must be >= 0, got {n}")
    lex = train_heldout_lexicon(split)
    rng = random.Random(f"minillm-classic/{seed}/{split}/segmented")
    for _ in range(int(n)):
        yield _story(rng, lex, split == "heldout")


def _single(words):
    return [w for w in words if " " not in w[0]]  # "toy car", "post office" are two English words


def analogy_questions(seed: int = 0, per_relation: int = 200) -> dict:
    """Analogy questions (a, b, c, d) — "a is to b as c is to d" — from the world's facts.

    Relations (English lowercased, as a lowercasing tokenizer sees it):
      en→zh: animals    cat : 猫 :: dog : 狗      (and the same for colours, objects, places)
      home city         tom : london :: lily : <Lily's home city>   (world ``seed``'s fact table)
      pet               tom : <Tom's pet> :: lily : <Lily's pet>
    Each relation keeps at most ``per_relation`` questions, in a fixed order; pairs whose
    answers coincide (two people with the same city) are left out, as they test nothing.
    """
    rel = {}
    for name, pairs in (("en→zh: animals", [(a[0], a[1]) for a in ANIMALS]),
                        ("en→zh: colours", list(COLOURS)),
                        ("en→zh: objects", [(o[0], o[1]) for o in _single(OBJECTS)]),
                        ("en→zh: places", [(p[0], p[2]) for p in _single(PLACES)])):
        rel[name] = [(a, b, c, d) for a, b in pairs for c, d in pairs if a != c]
    world = get_world(seed)
    people = [(NAMES[i][0].lower(), CITIES[world.home[i]][0].lower(), ANIMALS[world.pet[i]][0]) for i in range(len(NAMES))]
    rel["home city"] = [(a, ca, b, cb) for a, ca, _ in people for b, cb, _ in people if a != b and ca != cb]
    rel["pet"] = [(a, pa, b, pb) for a, _, pa in people for b, _, pb in people if a != b and pa != pb]
    rng = random.Random(f"minillm-classic/{seed}/analogies")
    out = {}
    for k, qs in rel.items():
        rng.shuffle(qs)
        out[k] = qs[:per_relation]
    return out


def word_categories() -> dict:
    """Category -> words (English lowercased and Chinese) for plots and neighbour checks."""
    return {
        "animals": [a[0] for a in ANIMALS] + [a[1] for a in ANIMALS],
        "colours": [c[0] for c in COLOURS] + [c[1] for c in COLOURS],
        "cities": [c[0].lower() for c in CITIES] + [c[1] for c in CITIES],
        "names": [n[0].lower() for n in NAMES] + [n[1] for n in NAMES],
        "objects": [o[0] for o in _single(OBJECTS)] + [o[1] for o in OBJECTS],
        "places": [p[0] for p in _single(PLACES)] + [p[2] for p in PLACES],
    }
