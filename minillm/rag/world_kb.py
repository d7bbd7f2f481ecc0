"""A knowledge base and its questions, from the built-in story world (``minillm.data.world``).

RAG is measured on documents the models never saw: the knowledge base is made of **val-split**
stories (the pretraining and fine-tuning generators reject every val story), and the training
data of the retriever and the reader is made of train-split stories only.

Questions. A plain "Where did Tom go?" has many answers in a knowledge base where Tom goes out
in a dozen stories, so every question names a second event of the same story as a qualifier::

    On the day Tom saw a panda, where did Tom go?            -> the park.
    On the day Amy bought a red cup, who did Amy meet?       -> Jack.

``kb_questions`` keeps a question only if every story it matches gives the same answer, and
records all of them as relevant (usually one). The qualifier never contains the answer.

Paraphrases. ``paraphrase=True`` rewrites the question with words no passage uses: verbs
("went to" -> "visited", "bought" -> "purchased", "saw" -> "spotted") and nouns ("umbrella" ->
"brolly", "market" -> "bazaar", "rabbit" -> "bunny"). BM25 only sees the names left in common;
a dense encoder can learn the synonyms from training questions about *other* stories. This is
the vocabulary-mismatch problem dense retrieval was invented for.

Reader data. ``rag_sft_records`` builds chat records whose user turn is ``build_prompt``
(question + numbered passages: the story among distractors, or only distractors) and whose
reply is ``"the park. [2]"`` or ``NO_ANSWER``.
"""
from __future__ import annotations

import json
import os
import random

from .._files import atomic_write
from ..data.world import (ANIMALS, COLOURS, NAMES, OBJECTS, PLACES, WorldConfig, article, story_stream,
                          get_world, render_story)
from .answer import NO_ANSWER, build_prompt, format_reply

__all__ = ["kb_stories", "story_facts", "kb_questions", "write_knowledge_base", "retriever_pairs",
           "rag_sft_records", "PLACE_SYNONYMS", "OBJECT_SYNONYMS", "ANIMAL_SYNONYMS"]

# Words no story uses, for the paraphrased questions (and the retriever's training questions).
PLACE_SYNONYMS = {
    "market": "bazaar", "park": "playground", "school": "classroom", "library": "reading room", "beach": "seaside",
    "zoo": "animal park", "farm": "ranch", "forest": "woods", "hospital": "clinic", "museum": "gallery",
    "station": "railway depot", "garden": "flowerbed", "shop": "store", "bakery": "bread shop", "lake": "pond",
    "river": "stream", "cafe": "coffee house", "cinema": "movie theater", "bank": "money office",
    "post office": "mail office",
}
OBJECT_SYNONYMS = {
    "apple": "fruit", "book": "novel", "ball": "sphere", "cup": "mug", "hat": "cap", "key": "latchkey",
    "kite": "glider", "box": "crate", "pen": "biro", "bag": "sack", "umbrella": "brolly", "cake": "pastry",
    "flower": "blossom", "letter": "note", "map": "chart", "watch": "wristwatch", "toy car": "model vehicle",
    "candle": "taper", "shirt": "blouse", "chair": "seat",
}
ANIMAL_SYNONYMS = {
    "cat": "kitty", "dog": "puppy", "rabbit": "bunny", "bird": "songbird", "fish": "trout", "horse": "pony",
    "duck": "mallard", "panda": "bamboo bear", "tiger": "big cat", "sheep": "lamb", "cow": "cattle",
    "monkey": "ape", "frog": "toad", "turtle": "tortoise", "owl": "night bird", "fox": "vixen",
}


def _a(word: str) -> str:
    return f"{article(word)} {word}"


def story_facts(events) -> list:
    """The askable events of a story as dicts: kind, who, and the answer fields."""
    out = []
    for ev in events:
        k = ev[0]
        if k == "go":
            out.append({"kind": "go", "a": ev[1], "place": ev[2]})
        elif k == "meet":
            out.append({"kind": "meet", "a": ev[1], "b": ev[2]})
        elif k == "get":
            out.append({"kind": "get", "a": ev[1], "obj": ev[2], "colour": ev[3], "find": ev[4]})
        elif k == "see":
            out.append({"kind": "see", "a": ev[1], "animal": ev[2]})
        elif k == "give":
            out.append({"kind": "give", "a": ev[1], "obj": ev[2], "b": ev[3]})
    return out


def _place(i, para):
    p = PLACES[i][0]
    return PLACE_SYNONYMS[p] if para else p


def _obj(i, para):
    o = OBJECTS[i][0]
    return OBJECT_SYNONYMS[o] if para else o


def _animal(i, para):
    a = ANIMALS[i][0]
    return ANIMAL_SYNONYMS[a] if para else a


def _clause(f: dict, para: bool) -> str:
    """The qualifier: "On the day Tom saw a panda"."""
    a = NAMES[f["a"]][0]
    k = f["kind"]
    if k == "go":
        return f"On the day {a} {'visited' if para else 'went to'} the {_place(f['place'], para)}"
    if k == "meet":
        return f"On the day {a} {'ran into' if para else 'met'} {NAMES[f['b']][0]}"
    if k == "get":
        verb = ("came across" if para else "found") if f["find"] else ("purchased" if para else "bought")
        return f"On the day {a} {verb} {_a(COLOURS[f['colour']][0] + ' ' + _obj(f['obj'], para))}"
    if k == "see":
        return f"On the day {a} {'spotted' if para else 'saw'} {_a(_animal(f['animal'], para))}"
    return f"On the day {a} {'handed' if para else 'gave'} the {_obj(f['obj'], para)} to {NAMES[f['b']][0]}"


def _ask(f: dict, para: bool) -> tuple:
    """(question without the qualifier, answer) about fact ``f``."""
    a = NAMES[f["a"]][0]
    k = f["kind"]
    if k == "go":
        return (f"which place did {a} visit?" if para else f"where did {a} go?"), f"the {PLACES[f['place']][0]}."
    if k == "meet":
        return (f"whom did {a} run into?" if para else f"who did {a} meet?"), f"{NAMES[f['b']][0]}."
    if k == "get":
        verb = ("come across" if para else "find") if f["find"] else ("purchase" if para else "buy")
        return f"what did {a} {verb}?", f"{_a(OBJECTS[f['obj']][0])}."
    if k == "see":
        return (f"which creature did {a} spot?" if para else f"what animal did {a} see?"), f"{_a(ANIMALS[f['animal']][0])}."
    return (f"whom did {a} hand the {_obj(f['obj'], True)} to?" if para
            else f"who did {a} give the {OBJECTS[f['obj']][0]} to?"), f"{NAMES[f['b']][0]}."


def _questions_of(events, para: bool) -> list:
    """Every (question, answer) of a story: each fact asked with each other fact as qualifier."""
    facts = story_facts(events)
    out = []
    for i, f in enumerate(facts):
        q, ans = _ask(f, para)
        for j, g in enumerate(facts):
            if i == j:
                continue
            clause = _clause(g, para)
            if ans.rstrip(".").split()[-1].lower() in clause.lower().split():
                continue  # the qualifier would give the answer away
            out.append((f"{clause}, {q}", ans))
    return out


def kb_stories(n: int, seed: int = 0, purpose: str = "rag-kb", split: str = "val") -> list:
    """``n`` distinct stories (event tuples) of ``split``, English, deterministic for ``seed``."""
    cfg = WorldConfig(seed=seed, langs=("en",))
    seen, out = set(), []
    for events in story_stream(cfg, split, purpose):
        if events not in seen and len(story_facts(events)) >= 2:
            seen.add(events)
            out.append(events)
            if len(out) == n:
                break
    return out


def kb_questions(stories, seed: int = 0, per_story: int = 1, paraphrase: bool = False) -> list:
    """Unambiguous questions about ``stories``: dicts ``question``, ``answer``, ``story`` (index of
    the story it was drawn from), ``relevant`` (indices of every story that answers it, the same)."""
    rng = random.Random(f"minillm-rag/{seed}/questions")
    answers: dict = {}  # question text (canonical) -> {story: answer}
    per = []
    for s, events in enumerate(stories):
        qs = _questions_of(events, False)
        per.append(qs)
        for q, a in qs:
            answers.setdefault(q, {})[s] = a
    out = []
    for s, events in enumerate(stories):
        canon = [(i, q, a) for i, (q, a) in enumerate(per[s]) if len(set(answers[q].values())) == 1]
        para = _questions_of(events, True) if paraphrase else None
        for i, q, a in rng.sample(canon, min(per_story, len(canon))):
            text = para[i][0] if paraphrase else q
            out.append({"question": text, "answer": a, "story": s, "relevant": sorted(answers[q])})
    return out


def write_knowledge_base(stories, out_dir, seed: int = 0, bad_file: bool = True) -> list:
    """Write ``stories`` into ``out_dir`` as Markdown diaries (one ``## Entry`` section per story),
    ``.txt`` notes (one story per file) and a ``.jsonl`` file, plus (``bad_file``) a damaged
    ``.jsonl`` the loader must skip. Returns each story's text (what retrieval must find)."""
    world = get_world(seed)
    texts = [render_story(ev, "en", world) for ev in stories]
    os.makedirs(os.path.join(out_dir, "notes"), exist_ok=True)
    n = len(texts)
    md_end, txt_end = n // 2, (3 * n) // 4
    for part in range(0, md_end, 50):
        body = [f"# Diary, part {part // 50 + 1}\n"]
        body += [f"## Entry {i + 1}\n\n{texts[i]}\n" for i in range(part, min(part + 50, md_end))]
        atomic_write(os.path.join(out_dir, f"diary_{part // 50 + 1:02d}.md"), "\n".join(body))
    for i in range(md_end, txt_end):
        atomic_write(os.path.join(out_dir, "notes", f"note_{i + 1:04d}.txt"), texts[i] + "\n")
    lines = [json.dumps({"id": i + 1, "text": texts[i]}) for i in range(txt_end, n)]
    atomic_write(os.path.join(out_dir, "records.jsonl"), "\n".join(lines) + "\n")
    if bad_file:
        atomic_write(os.path.join(out_dir, "broken.jsonl"), '{"text": "a line cut in the mid\n')
    return texts


def retriever_pairs(n_stories: int, seed: int = 0, per_story: int = 4) -> tuple:
    """Training pairs for the bi-encoder from **train** stories: ``(pairs, group)`` where
    ``pairs`` = [(question, story text)] (canonical and paraphrased questions) and ``group[i]``
    is pair i's story index (so one batch never holds two questions about one story)."""
    world = get_world(seed)
    rng = random.Random(f"minillm-rag/{seed}/retriever-pairs")
    pairs, group = [], []
    for s, events in enumerate(kb_stories(n_stories, seed, purpose="rag-retriever", split="train")):
        text = render_story(events, "en", world)
        qs = _questions_of(events, False) + _questions_of(events, True)
        for q, _ in rng.sample(qs, min(per_story, len(qs))):
            pairs.append((q, text))
            group.append(s)
    return pairs, group


def rag_sft_records(n: int, seed: int = 0, n_passages: int = 3, no_answer: float = 0.15,
                    split: str = "train", purpose: str = "rag-reader", heading: float = 0.5) -> list:
    """``n`` chat records teaching a reader to answer from numbered passages and cite one.

    Each user turn is ``build_prompt(question, passages)`` with 1..``n_passages`` passages; the
    story that answers sits at a random position among distractor stories that share its main
    character where possible (hard negatives, as BM25 would retrieve), or, with probability
    ``no_answer``, is left out and the reply is ``NO_ANSWER``. With probability ``heading`` a
    passage starts with an ``## Entry N`` heading, as the chunks of the Markdown diaries of
    ``write_knowledge_base`` do (so the reader learns that a heading's number is not a citation).
    """
    world = get_world(seed)
    rng = random.Random(f"minillm-rag/{seed}/{split}/{purpose}")
    pool = kb_stories(max(4 * n_passages, n // 2 + 16), seed, purpose=purpose, split=split)
    texts = [render_story(ev, "en", world) for ev in pool]
    texts = [f"## Entry {rng.randint(1, 300)}\n\n{t}" if rng.random() < heading else t for t in texts]
    by_name: dict = {}
    for i, ev in enumerate(pool):
        by_name.setdefault(story_facts(ev)[0]["a"], []).append(i)
    out = []
    while len(out) < n:
        s = rng.randrange(len(pool))
        qs = _questions_of(pool[s], rng.random() < 0.3)
        if not qs:
            continue
        q, ans = rng.choice(qs)
        k = rng.randint(1, n_passages)
        same = [i for i in by_name.get(story_facts(pool[s])[0]["a"], []) if i != s]
        others = rng.sample(same, min(len(same), k))
        while len(others) < k:
            j = rng.randrange(len(pool))
            if j != s and j not in others:
                others.append(j)
        if rng.random() < no_answer:
            passages, reply = [texts[j] for j in others[:k]], NO_ANSWER
        else:
            ids = others[: k - 1]
            pos = rng.randrange(k)
            ids.insert(pos, s)
            passages, reply = [texts[j] for j in ids], format_reply(ans, pos + 1)
        out.append({"messages": [{"role": "user", "content": build_prompt(q, passages)},
                                 {"role": "assistant", "content": reply}],
                    "meta": {"skill": "rag" if reply != NO_ANSWER else "rag_no_answer"}})
    return out
