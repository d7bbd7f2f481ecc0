"""A tiny bilingual story world: the built-in default corpus (Happy LLM 5.3.1, 6.1-6.2).

The book downloads ~10 GB (seq-monkey for pretraining, BelleGroup for SFT).
A laptop run cannot use that, so the main example trains on a small *synthetic
world* instead: everything here is generated from a seed, in English and
Chinese, in well under a second, and it is small enough for a dim-128 model to
learn in minutes.

The world
---------
* A lexicon: 24 characters, 20 places, 12 home cities, 20 objects, 16 animals,
  10 colours and a few common words, each with an English and a Chinese form.
* A fact table fixed by the seed: every character has a home city, a pet and a
  favourite colour, the same in every story (so these facts can be learned
  during pretraining and asked "closed book" later).
* Stories of 3-8 sentences built from a few events (go to a place, meet a
  friend, buy/find an object of some colour, see an animal, give the object to
  the friend, ...), each event rendered from a few templates. A story is a list
  of events first, then rendered to English or Chinese, so the two languages
  can tell the *same* story (used for parallel, bilingual documents).

SFT skills (``generate_sft``)
-----------------------------
* ``"qa"``: reading comprehension. The user message is a story plus a
  question ("Where did Tom go?" / "汤姆去了哪里？"); the answer is short and
  deterministic ("the market." / "市场。").
* ``"translate"``: one lexicon word, English <-> Chinese ("cat" -> "猫").
* ``"math"``: add or subtract numbers below ``max_number`` ("What is 7 + 5?" -> "12").
* ``"facts"`` (optional, not in the default mix): closed-book questions about
  the fact table ("What pet does Tom have?" -> "a cat."); train and val use
  different characters, so val measures knowledge picked up in pretraining.

Held-out split
--------------
Train and val never share a story: the split is decided by a checksum of the
story's events (about 10 % of all possible stories belong to "val"), and each
generator rejects stories of the other split. Arithmetic problems can be held
out the same way (``WorldConfig(heldout_math=True)``). Translation uses the
whole (small) lexicon in both splits, so it measures memorisation.

Everything is deterministic for a seed: we use private ``random.Random``
streams (seeded with strings, which Python hashes with SHA-512, so results do
not depend on ``PYTHONHASHSEED``) and never the global random state.
"""

from __future__ import annotations

import json
import os
import random
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Optional, Sequence

from .._files import atomic_path, atomic_write

__all__ = [
    "WorldConfig",
    "World",
    "get_world",
    "generate_stories",
    "generate_sft",
    "write_default_corpus",
    "SKILLS",
]

# ----------------------------------------------------------------------------
# Lexicon. Every entry has an English and a Chinese form.
# ----------------------------------------------------------------------------

# (English, Chinese, gender "m"/"f" for pronouns)
NAMES = [
    ("Tom", "汤姆", "m"), ("Lily", "莉莉", "f"), ("Anna", "安娜", "f"), ("Jack", "杰克", "m"),
    ("Lucy", "露西", "f"), ("Sam", "山姆", "m"), ("Emma", "艾玛", "f"), ("Leo", "利奥", "m"),
    ("Mia", "米娅", "f"), ("Max", "马克斯", "m"), ("Nina", "妮娜", "f"), ("Bob", "鲍勃", "m"),
    ("Kate", "凯特", "f"), ("David", "大卫", "m"), ("Sara", "萨拉", "f"), ("Peter", "彼得", "m"),
    ("Alice", "爱丽丝", "f"), ("Mike", "迈克", "m"), ("Jane", "简", "f"), ("Paul", "保罗", "m"),
    ("Rose", "罗丝", "f"), ("Tim", "蒂姆", "m"), ("Amy", "艾米", "f"), ("Eric", "埃里克", "m"),
]
# (English noun, Chinese as used in "去了...", Chinese dictionary word)
PLACES = [
    ("market", "市场", "市场"), ("park", "公园", "公园"), ("school", "学校", "学校"),
    ("library", "图书馆", "图书馆"), ("beach", "海滩", "海滩"), ("zoo", "动物园", "动物园"),
    ("farm", "农场", "农场"), ("forest", "森林", "森林"), ("hospital", "医院", "医院"),
    ("museum", "博物馆", "博物馆"), ("station", "火车站", "火车站"), ("garden", "花园", "花园"),
    ("shop", "商店", "商店"), ("bakery", "面包店", "面包店"), ("lake", "湖边", "湖"),
    ("river", "河边", "河"), ("cafe", "咖啡馆", "咖啡馆"), ("cinema", "电影院", "电影院"),
    ("bank", "银行", "银行"), ("post office", "邮局", "邮局"),
]
CITIES = [
    ("London", "伦敦"), ("Paris", "巴黎"), ("Beijing", "北京"), ("Shanghai", "上海"),
    ("Tokyo", "东京"), ("Sydney", "悉尼"), ("Rome", "罗马"), ("Cairo", "开罗"),
    ("Berlin", "柏林"), ("Madrid", "马德里"), ("Moscow", "莫斯科"), ("Toronto", "多伦多"),
]
# (English, Chinese, Chinese measure word used in "一个/一本/...")
OBJECTS = [
    ("apple", "苹果", "个"), ("book", "书", "本"), ("ball", "球", "个"), ("cup", "杯子", "个"),
    ("hat", "帽子", "顶"), ("key", "钥匙", "把"), ("kite", "风筝", "只"), ("box", "盒子", "个"),
    ("pen", "笔", "支"), ("bag", "包", "个"), ("umbrella", "雨伞", "把"), ("cake", "蛋糕", "块"),
    ("flower", "花", "朵"), ("letter", "信", "封"), ("map", "地图", "张"), ("watch", "手表", "块"),
    ("toy car", "玩具车", "辆"), ("candle", "蜡烛", "支"), ("shirt", "衬衫", "件"), ("chair", "椅子", "把"),
]
ANIMALS = [
    ("cat", "猫", "只"), ("dog", "狗", "只"), ("rabbit", "兔子", "只"), ("bird", "鸟", "只"),
    ("fish", "鱼", "条"), ("horse", "马", "匹"), ("duck", "鸭子", "只"), ("panda", "熊猫", "只"),
    ("tiger", "老虎", "只"), ("sheep", "羊", "只"), ("cow", "牛", "头"), ("monkey", "猴子", "只"),
    ("frog", "青蛙", "只"), ("turtle", "乌龟", "只"), ("owl", "猫头鹰", "只"), ("fox", "狐狸", "只"),
]
COLOURS = [
    ("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"), ("white", "白色"),
    ("black", "黑色"), ("pink", "粉色"), ("purple", "紫色"), ("orange", "橙色"), ("brown", "棕色"),
]
# A few everyday words, only used by the translation skill and word lists.
WORDS = [
    ("go", "去"), ("buy", "买"), ("see", "看见"), ("give", "给"), ("find", "找到"), ("eat", "吃"),
    ("read", "读"), ("run", "跑"), ("happy", "高兴"), ("friend", "朋友"), ("home", "家"),
    ("morning", "早上"), ("rain", "雨"), ("tree", "树"),
]

# Story pieces: time phrases and sentence templates, (English, Chinese) pairs.
TIMES = [
    ("One day", "有一天"), ("In the morning", "早上"), ("On Sunday", "星期天"),
    ("In the afternoon", "下午"), ("Yesterday", "昨天"), ("After lunch", "午饭后"),
]
GO_TEMPLATES = [
    ("{T}, {A} went to the {P}.", "{T}，{A}去了{P}。"),
    ("{T}, {A} walked to the {P}.", "{T}，{A}走路去了{P}。"),
    ("{T}, {A} took a bus to the {P}.", "{T}，{A}坐公交车去了{P}。"),
]
MEET_TEMPLATES = [
    ("There, {A} met {B}.", "{A}在那里遇到了{B}。"),
    ("At the {P}, {A} met {his} friend {B}.", "在{P}，{A}遇到了朋友{B}。"),
]
SEE_TEMPLATES = [
    ("{A} saw {an_animal}.", "{A}看到了一{mw}{animal}。"),
    ("{A} saw {an_animal} there.", "{A}在那里看到了一{mw}{animal}。"),
]
BUY_TEMPLATES = [
    ("{A} bought {an_thing}.", "{A}买了一{mw}{thing}。"),
]
FIND_TEMPLATES = [
    ("{A} found {an_thing} on the ground.", "{A}在地上找到了一{mw}{thing}。"),
    ("{A} found {an_thing} under a tree.", "{A}在树下找到了一{mw}{thing}。"),
]
WEATHER = [
    ("It was a sunny day.", "那天阳光明媚。"), ("It was raining.", "那天在下雨。"),
    ("The wind was cold.", "那天风很冷。"), ("The sky was full of clouds.", "天上有很多云。"),
]
END_TEMPLATES = [
    ("Then {he} went home.", "然后{he}回家了。"),
    ("In the evening, {A} went home happily.", "晚上，{A}高高兴兴地回家了。"),
    ("{A} had a good day.", "{A}度过了愉快的一天。"),
]

SKILLS = ("qa", "translate", "math", "facts")
_DOC_KINDS = ("story", "qa", "bilingual", "words", "math")


# ----------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------


@dataclass
class WorldConfig:
    """Knobs of the synthetic world. Every field has a small, explained default.

    seed: world seed: fixes the fact table and every generated text.
    n_stories / n_val_stories: pretraining documents written by
        ``write_default_corpus``. 30 000 documents are ~1 M tokens with a 2k
        BPE vocabulary: one pass of the default run does not repeat itself.
    n_sft / n_val_sft: SFT conversations written by ``write_default_corpus``.
    langs: story/question languages; both are needed for "translate".
    min_sentences / max_sentences: story length (inclusive), 2 <= min <= max <= 10.
    doc_mix: share of pretraining document kinds: monolingual "story",
        "qa" (a story followed by questions about it and their answers: reading
        comprehension text, as web corpora contain; it teaches a small model to
        look things up in its context during pretraining, which SFT then builds on),
        parallel "bilingual" story (English and Chinese telling the same story),
        "words" (bilingual word lists) and "math" (worked sums). The last two
        give pretraining some grounding for the translate and math skills.
    skill_weights: relative frequency of each SFT skill (among those asked for).
    max_number: math operands are 0 .. max_number-1; subtraction never goes negative.
    heldout_math: if True, val math problems never occur in train (measures
        generalisation, much harder for a tiny model). Default False: there are
        only ~2 * max_number**2 problems, so val mostly re-asks known ones.
    val_fraction: share of all possible stories (and characters / problems)
        reserved for the val split.
    system_prompt: if set, every SFT conversation starts with this system message.
    """

    seed: int = 0
    n_stories: int = 30_000
    n_val_stories: int = 1_000
    n_sft: int = 6_000
    n_val_sft: int = 300
    langs: tuple = ("en", "zh")
    min_sentences: int = 3
    max_sentences: int = 8
    doc_mix: dict = field(
        default_factory=lambda: {"story": 0.55, "qa": 0.25, "bilingual": 0.1, "words": 0.05, "math": 0.05}
    )
    skill_weights: dict = field(
        default_factory=lambda: {"qa": 0.6, "translate": 0.2, "math": 0.2, "facts": 0.2}
    )
    max_number: int = 20
    heldout_math: bool = False
    val_fraction: float = 0.1
    system_prompt: Optional[str] = None

    def __post_init__(self):
        self.langs = tuple(self.langs)
        if not self.langs or any(lang not in ("en", "zh") for lang in self.langs):
            raise ValueError(f"WorldConfig.langs must be a non-empty subset of ('en', 'zh'), got {self.langs!r}")
        if not 2 <= self.min_sentences <= self.max_sentences <= 10:
            raise ValueError(
                "WorldConfig needs 2 <= min_sentences <= max_sentences <= 10, got "
                f"min_sentences={self.min_sentences}, max_sentences={self.max_sentences}"
            )
        for name in ("n_stories", "n_val_stories", "n_sft", "n_val_sft"):
            if getattr(self, name) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")
        bad = set(self.doc_mix) - set(_DOC_KINDS)
        if bad or not self.doc_mix or any(w < 0 for w in self.doc_mix.values()) or sum(self.doc_mix.values()) <= 0:
            raise ValueError(
                f"WorldConfig.doc_mix must map some of {_DOC_KINDS} to weights >= 0 (not all 0), got {self.doc_mix!r}"
            )
        bad = set(self.skill_weights) - set(SKILLS)
        if bad or any(w < 0 for w in self.skill_weights.values()):
            raise ValueError(f"WorldConfig.skill_weights must map some of {SKILLS} to weights >= 0, got {self.skill_weights!r}")
        if not 2 <= self.max_number <= 1000:
            raise ValueError(f"WorldConfig.max_number must be in [2, 1000], got {self.max_number}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"WorldConfig.val_fraction must be in (0, 1), got {self.val_fraction}")


def _resolve(seed, config) -> WorldConfig:
    """The ``seed`` argument wins over ``config.seed``; default seed is 0."""
    if config is None:
        return WorldConfig(seed=0 if seed is None else int(seed))
    if seed is not None and int(seed) != config.seed:
        return replace(config, seed=int(seed))
    return config


def _check_split(split):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def _in_val(key: str, seed: int, val_fraction: float) -> bool:
    """Deterministic split by checksum: True if ``key`` belongs to the val split."""
    h = zlib.crc32(f"{seed}|{key}".encode("utf-8"))
    return h < val_fraction * 2**32


# ----------------------------------------------------------------------------
# The world's fact table
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """The fixed facts of a world: per character index, a home city, a pet and a colour."""

    seed: int
    home: tuple  # home[c] = index into CITIES
    pet: tuple  # pet[c] = index into ANIMALS
    colour: tuple  # colour[c] = index into COLOURS

    def facts(self) -> list:
        """Human-readable fact table (written to ``world_facts.json``)."""
        return [
            {
                "name": NAMES[c][0], "name_zh": NAMES[c][1],
                "home": CITIES[self.home[c]][0], "home_zh": CITIES[self.home[c]][1],
                "pet": ANIMALS[self.pet[c]][0], "pet_zh": ANIMALS[self.pet[c]][1],
                "favourite_colour": COLOURS[self.colour[c]][0],
                "favourite_colour_zh": COLOURS[self.colour[c]][1],
            }
            for c in range(len(NAMES))
        ]


@lru_cache(maxsize=16)
def get_world(seed: int = 0) -> World:
    """The fact table of world ``seed`` (same for train and val)."""
    rng = random.Random(f"minillm-world/{seed}/facts")
    n = len(NAMES)
    return World(
        seed=seed,
        home=tuple(rng.randrange(len(CITIES)) for _ in range(n)),
        pet=tuple(rng.randrange(len(ANIMALS)) for _ in range(n)),
        colour=tuple(rng.randrange(len(COLOURS)) for _ in range(n)),
    )


# ----------------------------------------------------------------------------
# Stories: sample a list of events, then render it in a language
# ----------------------------------------------------------------------------
# Events are tuples of small ints (never floats or strings with randomised
# hashes), so that ``repr(events)`` is a stable key for the train/val split:
#   ("home", a)                          a lives in their home city
#   ("go", a, place, time, tmpl)          a went to place
#   ("meet", a, b, place, tmpl)           a met b there
#   ("get", who, obj, colour, find, tmpl) who bought (find=0) / found (find=1) a colour obj
#   ("see", who, animal, tmpl)            who saw an animal
#   ("give", a, obj, b)                   a gave the obj to b
#   ("pet", a) / ("fav", a)               world facts: a's pet / favourite colour
#   ("weather", k) / ("end", a, tmpl)     no question is asked about these


def _sample_events(rng: random.Random, cfg: WorldConfig, world: World) -> tuple:
    target = rng.randint(cfg.min_sentences, cfg.max_sentences)
    a = rng.randrange(len(NAMES))
    b = rng.randrange(len(NAMES) - 1)
    b = b + 1 if b >= a else b  # any character but a
    # the head (home?, go, meet?) leaves room for at least one middle event
    has_b = rng.random() < 0.7 and target >= 3
    has_home = rng.random() < 0.3 and target >= 3 + has_b
    place = rng.randrange(len(PLACES))
    obj_a, obj_b = rng.sample(range(len(OBJECTS)), 2)
    ani_a, ani_b = rng.sample(range(len(ANIMALS)), 2)

    head = []
    if has_home:
        head.append(("home", a))
    head.append(("go", a, place, rng.randrange(len(TIMES)), rng.randrange(len(GO_TEMPLATES))))
    if has_b:
        head.append(("meet", a, b, place, rng.randrange(len(MEET_TEMPLATES))))

    get_a = ("get", a, obj_a, rng.randrange(len(COLOURS)), rng.randrange(2), rng.randrange(2))
    pool = [
        get_a,
        ("see", a, ani_a, rng.randrange(len(SEE_TEMPLATES))),
        ("weather", rng.randrange(len(WEATHER))),
        ("pet", a),
        ("fav", a),
    ]
    if has_b:
        pool.append(("get", b, obj_b, rng.randrange(len(COLOURS)), rng.randrange(2), rng.randrange(2)))
        pool.append(("see", b, ani_b, rng.randrange(len(SEE_TEMPLATES))))
    rng.shuffle(pool)

    tail = []
    if has_b and rng.random() < 0.5:
        tail.append(("give", a, obj_a, b))
    if rng.random() < 0.5:
        tail.append(("end", a, rng.randrange(len(END_TEMPLATES))))

    n_middle = max(1, min(len(pool), target - len(head) - len(tail)))
    middle = pool[:n_middle]
    if tail and len(head) + len(middle) + len(tail) > target:  # too long: drop the ending first
        tail = tail[: max(0, target - len(head) - len(middle))]
    if tail and tail[0][0] == "give" and get_a not in middle:
        # a can only give what a has: mention the object before giving it
        middle[-1] = get_a
    return tuple(head + middle + tail)


def article(word: str) -> str:
    """The English indefinite article the world's stories put before ``word`` ("an apple", "a ball")."""
    return "an" if word[0] in "aeiou" else "a"


def _render_event(ev: tuple, lang: str, world: World) -> str:
    kind = ev[0]
    zh = lang == "zh"
    a = ev[1] if len(ev) > 1 else 0
    name = NAMES[a][1] if zh else NAMES[a][0]
    if kind == "home":
        city = CITIES[world.home[a]]
        return f"{name}住在{city[1]}。" if zh else f"{name} lives in {city[0]}."
    if kind == "go":
        _, _, place, t, tmpl = ev
        return GO_TEMPLATES[tmpl][zh].format(T=TIMES[t][zh], A=name, P=PLACES[place][1] if zh else PLACES[place][0])
    if kind == "meet":
        _, _, b, place, tmpl = ev
        his = "his" if NAMES[a][2] == "m" else "her"
        return MEET_TEMPLATES[tmpl][zh].format(
            A=name, B=NAMES[b][zh], P=PLACES[place][1] if zh else PLACES[place][0], his=his
        )
    if kind == "get":
        _, _, obj, col, find, tmpl = ev
        templates = FIND_TEMPLATES if find else BUY_TEMPLATES
        t = templates[tmpl % len(templates)][zh]
        if zh:
            return t.format(A=name, mw=OBJECTS[obj][2], thing=f"{COLOURS[col][1]}的{OBJECTS[obj][1]}")
        thing = f"{COLOURS[col][0]} {OBJECTS[obj][0]}"
        return t.format(A=name, an_thing=f"{article(thing)} {thing}")
    if kind == "see":
        _, _, ani, tmpl = ev
        if zh:
            return SEE_TEMPLATES[tmpl][1].format(A=name, mw=ANIMALS[ani][2], animal=ANIMALS[ani][1])
        animal = ANIMALS[ani][0]
        return SEE_TEMPLATES[tmpl][0].format(A=name, an_animal=f"{article(animal)} {animal}")
    if kind == "give":
        _, _, obj, b = ev
        if zh:
            return f"{name}把{OBJECTS[obj][1]}送给了{NAMES[b][1]}。"
        return f"{name} gave the {OBJECTS[obj][0]} to {NAMES[b][0]}."
    if kind == "pet":
        ani = ANIMALS[world.pet[a]]
        return f"{name}养了一{ani[2]}{ani[1]}。" if zh else f"{name} has a pet {ani[0]}."
    if kind == "fav":
        col = COLOURS[world.colour[a]]
        return f"{name}最喜欢的颜色是{col[1]}。" if zh else f"{name}'s favourite colour is {col[0]}."
    if kind == "weather":
        return WEATHER[ev[1]][zh]
    if kind == "end":
        _, _, tmpl = ev
        if zh:
            he = "他" if NAMES[a][2] == "m" else "她"
        else:
            he = "he" if NAMES[a][2] == "m" else "she"
        return END_TEMPLATES[tmpl][zh].format(A=name, he=he)
    raise ValueError(f"unknown story event {ev!r}")  # pragma: no cover


def render_story(events: Sequence[tuple], lang: str, world: World) -> str:
    """Render a list of events as one paragraph in ``lang`` ("en" or "zh")."""
    sep = "" if lang == "zh" else " "
    return sep.join(_render_event(ev, lang, world) for ev in events)


def _fact_question(kind: str, c: int, lang: str, world: World) -> tuple:
    """(question, answer) about character c's world facts: kind in home/pet/fav."""
    en, zh = NAMES[c][0], NAMES[c][1]
    if kind == "home":
        city = CITIES[world.home[c]]
        return (f"{zh}住在哪里？", f"{city[1]}。") if lang == "zh" else (f"Where does {en} live?", f"{city[0]}.")
    if kind == "pet":
        ani = ANIMALS[world.pet[c]]
        if lang == "zh":
            return f"{zh}养了什么宠物？", f"一{ani[2]}{ani[1]}。"
        return f"What pet does {en} have?", f"{article(ani[0])} {ani[0]}."
    col = COLOURS[world.colour[c]]
    return (f"{zh}最喜欢什么颜色？", f"{col[1]}。") if lang == "zh" else (f"What is {en}'s favourite colour?", f"{col[0]}.")


def story_questions(events: Sequence[tuple], lang: str, world: World) -> list:
    """Every question the story answers, as (qtype, question, answer) triples.

    The sampler keeps facts unique within a story (one place, distinct objects
    and animals), so each answer is unambiguous.
    """
    zh = lang == "zh"
    out = []
    for ev in events:
        kind = ev[0]
        if kind in ("weather", "end"):
            continue
        a = ev[1]
        n = NAMES[a][zh]
        if kind == "go":
            p = PLACES[ev[2]]
            out.append(("where", f"{n}去了哪里？", f"{p[1]}。") if zh else ("where", f"Where did {n} go?", f"the {p[0]}."))
        elif kind == "meet":
            b = NAMES[ev[2]][zh]
            out.append(("who_met", f"{n}遇到了谁？", f"{b}。") if zh else ("who_met", f"Who did {n} meet?", f"{b}."))
        elif kind == "get":
            _, _, obj, col, find, _ = ev
            o = OBJECTS[obj]
            if zh:
                verb = "找到了" if find else "买了"
                out.append(("what_got", f"{n}{verb}什么？", f"一{o[2]}{o[1]}。"))
                out.append(("colour", f"{o[1]}是什么颜色的？", f"{COLOURS[col][1]}。"))
            else:
                verb = "find" if find else "buy"
                out.append(("what_got", f"What did {n} {verb}?", f"{article(o[0])} {o[0]}."))
                out.append(("colour", f"What colour was the {o[0]}?", f"{COLOURS[col][0]}."))
        elif kind == "see":
            ani = ANIMALS[ev[2]]
            if zh:
                out.append(("animal", f"{n}看到了什么动物？", f"一{ani[2]}{ani[1]}。"))
            else:
                out.append(("animal", f"What animal did {n} see?", f"{article(ani[0])} {ani[0]}."))
        elif kind == "give":
            o, b = OBJECTS[ev[2]], NAMES[ev[3]][zh]
            if zh:
                out.append(("give_to", f"{n}把{o[1]}送给了谁？", f"{b}。"))
            else:
                out.append(("give_to", f"Who did {n} give the {o[0]} to?", f"{b}."))
        elif kind in ("home", "pet", "fav"):
            q, ans = _fact_question(kind, a, lang, world)
            out.append((kind, q, ans))
    return out


def story_stream(cfg: WorldConfig, split: str, purpose: str):
    """Endless iterator of event lists that belong to ``split`` ("train" or "val"); ``purpose`` names
    the consumer ("pretrain", "sft", the RAG knowledge base...) so each draws its own stories."""
    rng = random.Random(f"minillm-world/{cfg.seed}/{split}/{purpose}")
    world = get_world(cfg.seed)
    want_val = split == "val"
    while True:
        events = _sample_events(rng, cfg, world)
        if _in_val(repr(events), cfg.seed, cfg.val_fraction) == want_val:
            yield events


# ----------------------------------------------------------------------------
# Lexicon and arithmetic helpers (translate / math skills, word-list documents)
# ----------------------------------------------------------------------------


def lexicon() -> list:
    """All (english, chinese) word pairs of the world, in a fixed order."""
    pairs = [(n[0], n[1]) for n in NAMES]
    pairs += [(p[0], p[2]) for p in PLACES]
    pairs += list(CITIES)
    pairs += [(o[0], o[1]) for o in OBJECTS]
    pairs += [(a[0], a[1]) for a in ANIMALS]
    pairs += list(COLOURS)
    pairs += list(WORDS)
    return pairs


_LEXICON = lexicon()


@lru_cache(maxsize=16)
def _math_problems(seed: int, max_number: int, val_fraction: float, heldout: bool, split: str) -> tuple:
    """All (a, op, b) problems of a split; both splits get all of them unless ``heldout``."""
    probs = [(a, op, b) for a in range(max_number) for b in range(max_number) for op in "+-" if op == "+" or a >= b]
    if not heldout:
        return tuple(probs)
    want_val = split == "val"
    return tuple(p for p in probs if _in_val(f"math{p}", seed, val_fraction) == want_val)


def _math_text(a: int, op: str, b: int, lang: str, tmpl: int) -> str:
    if lang == "zh":
        return f"{a} {'加' if op == '+' else '减'} {b} 等于几？"
    return f"What is {a} {op} {b}?" if tmpl == 0 else f"{a} {op} {b} = ?"


def _word_list_doc(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(5, 12)):
        en, zh = rng.choice(_LEXICON)
        t = rng.randrange(3)
        if t == 0:
            lines.append(f"In Chinese, {en} is {zh}.")
        elif t == 1:
            lines.append(f"{zh} 的英文是 {en}。")
        else:
            lines.append(f"{en} = {zh}")
    return "\n".join(lines)


def _qa_doc(events: Sequence[tuple], lang: str, world: World, rng: random.Random) -> str:
    """A story, then 1-3 of its questions with answers, one per line."""
    qs = story_questions(events, lang, world)
    picked = rng.sample(qs, min(len(qs), rng.randint(1, 3)))
    if lang == "zh":
        lines = [f"问题：{q}\n答案：{a}" for _, q, a in picked]
    else:
        lines = [f"Question: {q}\nAnswer: {a}" for _, q, a in picked]
    return "\n".join([render_story(events, lang, world)] + lines)


def _math_doc(rng: random.Random, cfg: WorldConfig, split: str) -> str:
    probs = _math_problems(cfg.seed, cfg.max_number, cfg.val_fraction, cfg.heldout_math, split)
    lines = []
    for _ in range(rng.randint(4, 10)):
        a, op, b = rng.choice(probs)
        c = a + b if op == "+" else a - b
        if rng.choice(cfg.langs) == "zh":
            lines.append(f"{a} {'加' if op == '+' else '减'} {b} 等于 {c}。")
        else:
            lines.append(f"{a} {op} {b} = {c}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Public generators
# ----------------------------------------------------------------------------


def generate_stories(n: int, seed: Optional[int] = None, split: str = "train", config: Optional[WorldConfig] = None) -> list:
    """``n`` pretraining documents of the world (deterministic for ``seed``/``split``).

    Mostly stories (one paragraph, English or Chinese), mixed by
    ``config.doc_mix`` with parallel bilingual stories (the same story in both
    languages, one per line), word lists and worked sums. Use
    ``WorldConfig(doc_mix={"story": 1.0})`` for plain stories only.
    ``generate_stories(10)`` is a prefix of ``generate_stories(100)``.

    >>> generate_stories(1, seed=0, config=WorldConfig(doc_mix={"story": 1}))[0][:20]  # doctest: +SKIP
    'One day, Tom went to'
    """
    _check_split(split)
    cfg = _resolve(seed, config)
    world = get_world(cfg.seed)
    kinds = [k for k in _DOC_KINDS if cfg.doc_mix.get(k, 0) > 0]
    if "bilingual" in kinds and set(cfg.langs) != {"en", "zh"}:
        kinds.remove("bilingual")
        if not kinds:
            raise ValueError("doc_mix has only 'bilingual' documents but langs is not ('en', 'zh')")
    weights = [cfg.doc_mix[k] for k in kinds]
    rng = random.Random(f"minillm-world/{cfg.seed}/{split}/pretrain-mix")
    stories = story_stream(cfg, split, "pretrain")
    docs = []
    for _ in range(int(n)):
        kind = rng.choices(kinds, weights)[0] if len(kinds) > 1 else kinds[0]
        if kind == "story":
            docs.append(render_story(next(stories), rng.choice(cfg.langs), world))
        elif kind == "qa":
            docs.append(_qa_doc(next(stories), rng.choice(cfg.langs), world, rng))
        elif kind == "bilingual":
            events = next(stories)
            first, second = ("en", "zh") if rng.random() < 0.5 else ("zh", "en")
            docs.append(render_story(events, first, world) + "\n" + render_story(events, second, world))
        elif kind == "words":
            docs.append(_word_list_doc(rng))
        else:
            docs.append(_math_doc(rng, cfg, split))
    return docs


def _conversation(cfg: WorldConfig, user: str, answer: str, meta: dict) -> dict:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if cfg.system_prompt:
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    return {"messages": messages, "meta": meta}


def generate_sft(
    n: int,
    seed: Optional[int] = None,
    split: str = "train",
    skills: Sequence[str] = ("qa", "translate", "math"),
    config: Optional[WorldConfig] = None,
) -> list:
    """``n`` single-turn SFT conversations in the OpenAI shape.

    Each item is ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}],
    "meta": {"skill", "lang", "qtype"}}`` (plus a leading system message if
    ``config.system_prompt`` is set). ``meta`` is ignored by the SFT readers;
    it lets an evaluation report accuracy per skill. Skills are mixed by
    ``config.skill_weights``. Prompt formats::

        qa         "{story}\\nQuestion: {question}"   /  "{story}\\n问题：{question}"
        translate  "Translate to Chinese: cat"        /  "猫 的英文是什么？"  (4 templates)
        math       "What is 7 + 5?" or "7 + 5 = ?"    /  "7 加 5 等于几？"
        facts      "What pet does Tom have?"          /  "汤姆养了什么宠物？"

    Answers are short: "the market." / "市场。", "猫", "12", "a cat.".
    """
    _check_split(split)
    cfg = _resolve(seed, config)
    skills = tuple(skills)
    bad = [s for s in skills if s not in SKILLS]
    if bad or not skills:
        raise ValueError(f"unknown skills {bad!r}: choose from {SKILLS}")
    if "translate" in skills and set(cfg.langs) != {"en", "zh"}:
        raise ValueError(f"skill 'translate' needs langs=('en', 'zh'), got {cfg.langs!r}")
    weights = [cfg.skill_weights.get(s, 1.0) for s in skills]
    if sum(weights) <= 0:
        raise ValueError(f"skill_weights give zero weight to all of {skills}")
    world = get_world(cfg.seed)
    rng = random.Random(f"minillm-world/{cfg.seed}/{split}/sft")
    stories = story_stream(cfg, split, "sft")
    probs = _math_problems(cfg.seed, cfg.max_number, cfg.val_fraction, cfg.heldout_math, split)
    fact_chars = [c for c in range(len(NAMES)) if _in_val(f"char{c}", cfg.seed, 0.25) == (split == "val")]

    out = []
    for _ in range(int(n)):
        skill = rng.choices(skills, weights)[0] if len(skills) > 1 else skills[0]
        lang = rng.choice(cfg.langs)
        if skill == "qa":
            events = next(stories)
            qtype, q, ans = rng.choice(story_questions(events, lang, world))
            story = render_story(events, lang, world)
            user = f"{story}\n问题：{q}" if lang == "zh" else f"{story}\nQuestion: {q}"
        elif skill == "translate":
            en, zh = rng.choice(_LEXICON)
            tmpl = rng.randrange(2)
            if rng.random() < 0.5:  # English -> Chinese
                qtype, ans = "en2zh", zh
                user = f"Translate to Chinese: {en}" if tmpl == 0 else f"{en} 用中文怎么说？"
            else:
                qtype, ans = "zh2en", en
                user = f"Translate to English: {zh}" if tmpl == 0 else f"{zh} 的英文是什么？"
            lang = "en" if tmpl == 0 else "zh"
        elif skill == "math":
            a, op, b = rng.choice(probs)
            qtype, ans = ("add" if op == "+" else "sub"), str(a + b if op == "+" else a - b)
            user = _math_text(a, op, b, lang, rng.randrange(2))
        else:  # facts (closed book)
            c = rng.choice(fact_chars)
            qtype = rng.choice(("home", "pet", "fav"))
            user, ans = _fact_question(qtype, c, lang, world)
        out.append(_conversation(cfg, user, ans, {"skill": skill, "lang": lang, "qtype": qtype}))
    return out


def _write_jsonl(path: str, records) -> None:
    # streamed to a temporary file and renamed: a crash never leaves half a file under the real name
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False))
            f.write("\n")


def write_default_corpus(
    out_dir,
    n_stories: Optional[int] = None,
    n_sft: Optional[int] = None,
    seed: int = 0,
    config: Optional[WorldConfig] = None,
    skills: Sequence[str] = ("qa", "translate", "math"),
) -> dict:
    """Write the default corpus in the book's formats and return ``{name: path}``.

    Files (in ``out_dir``, created if needed):
      pretrain_train.jsonl / pretrain_val.jsonl  ``{"text": ...}`` per line
      sft_train.jsonl / sft_val.jsonl            ``{"messages": [...], "meta": {...}}`` per line
      world_facts.json                           the fact table, for curious readers
    Sizes default to the ``WorldConfig`` fields (val sizes: ``n_val_stories``,
    ``n_val_sft``).
    """
    cfg = _resolve(seed, config)
    n_stories = cfg.n_stories if n_stories is None else int(n_stories)
    n_sft = cfg.n_sft if n_sft is None else int(n_sft)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        name: os.path.join(os.fspath(out_dir), name + ".jsonl")
        for name in ("pretrain_train", "pretrain_val", "sft_train", "sft_val")
    }
    _write_jsonl(paths["pretrain_train"], ({"text": t} for t in generate_stories(n_stories, split="train", config=cfg)))
    _write_jsonl(paths["pretrain_val"], ({"text": t} for t in generate_stories(cfg.n_val_stories, split="val", config=cfg)))
    _write_jsonl(paths["sft_train"], generate_sft(n_sft, split="train", skills=skills, config=cfg))
    _write_jsonl(paths["sft_val"], generate_sft(cfg.n_val_sft, split="val", skills=skills, config=cfg))
    paths["world_facts"] = os.path.join(os.fspath(out_dir), "world_facts.json")
    atomic_write(paths["world_facts"], json.dumps(get_world(cfg.seed).facts(), ensure_ascii=False, indent=1))
    return paths
