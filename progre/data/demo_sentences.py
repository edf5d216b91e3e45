"""A built-in, deterministic generator of varied English sentences for the demo corpus.

The sentences are grammatical but semantically unpredictable ("Their tooth washed the silver
girl slowly."), as in TTS intelligibility tests: what matters here is phonetic variety. They
come from a handful of templates (statements, questions, commands, exclamations, two-clause
sentences with a comma) filled from word lists embedded below. The lists were chosen to cover
the English consonants and vowels in many contexts (clusters such as "str", "spl", "thr",
"sk"; all the diphthongs), so the corpus uses nearly all of eSpeak's English phonemes.
Sentences have 5 to 14 words, which eSpeak speaks in about 1.5 to 5 seconds at normal rates.

`sentence_pools(seed, sizes)` gives disjoint pools of distinct sentences per split, so test and
valid sentences are never seen in training. The same seed always gives the same sentences.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError

MIN_WORDS = 5
MAX_WORDS = 14

# --------------------------------------------------------------------------- word lists

NAMES = (
    "Alice", "Bruno", "Chloe", "Dmitri", "Eleanor", "Felix", "Greta", "Hugo", "Isabel", "Jasper",
    "Keiko", "Liam", "Maya", "Nathan", "Olivia", "Pablo", "Quentin", "Rosa", "Samuel", "Thea",
    "Umar", "Vera", "Walter", "Xavier", "Yusuf", "Zoe", "Martha", "George", "Judith", "Oscar",
)
PLACES = (
    "Boston", "Glasgow", "Lisbon", "the harbour", "the village", "the station", "the market",
    "the bakery", "the museum", "the library", "the garden", "the mountains", "the old bridge",
    "the city hall", "the beach", "the forest", "the theatre", "the school yard", "the shop",
    "the kitchen", "the workshop", "the farm", "the island", "the north coast", "the valley",
)
# (singular, plural)
NOUNS = (
    ("fox", "foxes"), ("child", "children"), ("dog", "dogs"), ("teacher", "teachers"),
    ("box", "boxes"), ("letter", "letters"), ("bottle", "bottles"), ("window", "windows"),
    ("engine", "engines"), ("apple", "apples"), ("orange", "oranges"), ("umbrella", "umbrellas"),
    ("sheep", "sheep"), ("mouse", "mice"), ("thief", "thieves"), ("knife", "knives"),
    ("bridge", "bridges"), ("judge", "judges"), ("church", "churches"), ("brush", "brushes"),
    ("garage", "garages"), ("treasure", "treasures"), ("voice", "voices"), ("shoe", "shoes"),
    ("yacht", "yachts"), ("wheel", "wheels"), ("clock", "clocks"), ("rope", "ropes"),
    ("stone", "stones"), ("string", "strings"), ("splinter", "splinters"), ("thread", "threads"),
    ("squirrel", "squirrels"), ("scarf", "scarves"), ("glove", "gloves"), ("puzzle", "puzzles"),
    ("jacket", "jackets"), ("ladder", "ladders"), ("pillow", "pillows"), ("kettle", "kettles"),
    ("owl", "owls"), ("boy", "boys"), ("girl", "girls"), ("pilot", "pilots"), ("nurse", "nurses"),
    ("farmer", "farmers"), ("sailor", "sailors"), ("doctor", "doctors"), ("baby", "babies"),
    ("story", "stories"), ("cherry", "cherries"), ("photo", "photos"), ("hero", "heroes"),
    ("tooth", "teeth"), ("goose", "geese"), ("wolf", "wolves"), ("leaf", "leaves"),
    ("map", "maps"), ("coin", "coins"), ("cloud", "clouds"), ("book", "books"), ("cup", "cups"),
    ("bird", "birds"), ("horse", "horses"), ("chair", "chairs"), ("table", "tables"),
    ("guitar", "guitars"), ("whistle", "whistles"), ("vase", "vases"), ("zebra", "zebras"),
)
ADJECTIVES = (
    "quick", "lazy", "brown", "tiny", "enormous", "quiet", "noisy", "yellow", "purple", "shiny",
    "broken", "frozen", "smooth", "rough", "thick", "thin", "heavy", "gentle", "strange",
    "ancient", "modern", "wooden", "golden", "silver", "clever", "curious", "sleepy", "hungry",
    "thirsty", "cheerful", "jealous", "bright", "dusty", "muddy", "wet", "fresh", "crooked",
    "round", "square", "orange", "empty", "awkward", "elegant", "oily", "useful", "ordinary",
)
# (base, past) of transitive verbs
VERBS = (
    ("carry", "carried"), ("catch", "caught"), ("bring", "brought"), ("find", "found"),
    ("push", "pushed"), ("pull", "pulled"), ("wash", "washed"), ("fix", "fixed"),
    ("paint", "painted"), ("measure", "measured"), ("choose", "chose"), ("throw", "threw"),
    ("steal", "stole"), ("hide", "hid"), ("seize", "seized"), ("squeeze", "squeezed"),
    ("borrow", "borrowed"), ("judge", "judged"), ("watch", "watched"), ("thank", "thanked"),
    ("breathe on", "breathed on"), ("sketch", "sketched"), ("splash", "splashed"),
    ("drag", "dragged"), ("lift", "lifted"), ("sell", "sold"), ("buy", "bought"),
    ("bake", "baked"), ("wrap", "wrapped"), ("weigh", "weighed"), ("polish", "polished"),
    ("describe", "described"), ("visit", "visited"), ("follow", "followed"), ("open", "opened"),
    ("mend", "mended"), ("shake", "shook"), ("touch", "touched"), ("examine", "examined"),
)
# (base, past) of intransitive verbs
INTRANSITIVE = (
    ("laugh", "laughed"), ("shout", "shouted"), ("whisper", "whispered"), ("sing", "sang"),
    ("dance", "danced"), ("sneeze", "sneezed"), ("vanish", "vanished"), ("arrive", "arrived"),
    ("wait", "waited"), ("sleep", "slept"), ("swim", "swam"), ("climb", "climbed"),
    ("jump", "jumped"), ("breathe", "breathed"), ("stumble", "stumbled"), ("yawn", "yawned"),
    ("complain", "complained"), ("travel", "travelled"), ("listen", "listened"), ("smile", "smiled"),
)
ADVERBS = (
    "slowly", "quickly", "carefully", "loudly", "quietly", "happily", "sadly", "angrily",
    "gently", "suddenly", "eagerly", "boldly", "calmly", "rarely", "nearly", "often", "twice",
)
PREPOSITIONS = ("near", "behind", "under", "beside", "inside", "across", "through", "towards", "above")
TIMES = (
    "yesterday", "this morning", "last Thursday", "every evening", "at midnight", "in June",
    "before lunch", "after the storm", "on Sunday", "tonight", "at dawn", "in the autumn",
    "three weeks ago", "during the festival",
)
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty", "forty")
DETERMINERS = ("the", "a", "this", "that", "every", "my", "your", "our", "her", "his", "their")
PLURAL_DETERMINERS = ("the", "these", "those", "some", "many", "few", "my", "our", "their")
OPENERS = ("Frankly", "Luckily", "Of course", "In fact", "Meanwhile", "However", "Honestly", "Well")
EXCLAIMS = ("What a", "Such a")

# --------------------------------------------------------------------------- phrases


def _pick(rng: np.random.Generator, items: tuple):
    """One item of `items`, drawn by `rng`."""
    return items[int(rng.integers(len(items)))]


def _article(word: str) -> str:
    """`a` or `an` before `word` (the word lists avoid exceptions like "hour" or "unit")."""
    return "an" if word[0].lower() in "aeiou" else "a"


def _noun_phrase(rng: np.random.Generator) -> str:
    """A subject or object: a name, or a determiner, optional adjective(s) and a noun."""
    kind = rng.random()
    if kind < 0.2:
        return _pick(rng, NAMES)
    if kind < 0.45:
        words = [_pick(rng, PLURAL_DETERMINERS) if rng.random() < 0.6 else _pick(rng, NUMBERS)]
        if rng.random() < 0.6:
            words.append(_pick(rng, ADJECTIVES))
        words.append(_pick(rng, NOUNS)[1])
        return " ".join(words)
    words = []
    if rng.random() < 0.6:
        words.append(_pick(rng, ADJECTIVES))
        if rng.random() < 0.2:
            words.append(_pick(rng, ADJECTIVES))
    words.append(_pick(rng, NOUNS)[0])
    determiner = _pick(rng, DETERMINERS)
    if determiner == "a":
        determiner = _article(words[0])
    return " ".join([determiner, *words])


def _adjunct(rng: np.random.Generator) -> str:
    """An optional place, time or manner phrase (may be empty)."""
    kind = rng.random()
    if kind < 0.3:
        return f"{_pick(rng, PREPOSITIONS)} {_pick(rng, PLACES)}"
    if kind < 0.55:
        return _pick(rng, TIMES)
    if kind < 0.7:
        return _pick(rng, ADVERBS)
    return ""


def _join(*parts: str) -> str:
    """Words of the non-empty parts, separated by single spaces."""
    return " ".join(p for p in parts if p)


# --------------------------------------------------------------------------- templates


def _statement(rng: np.random.Generator) -> str:
    """`The clever fox carried three muddy boxes near the harbour.`"""
    if rng.random() < 0.7:
        return _join(_noun_phrase(rng), _pick(rng, VERBS)[1], _noun_phrase(rng), _adjunct(rng)) + "."
    return _join(_noun_phrase(rng), _pick(rng, INTRANSITIVE)[1], _adjunct(rng), _adjunct(rng)) + "."


def _question(rng: np.random.Generator) -> str:
    """`Did Alice really paint the wooden ladder yesterday?` and wh-questions."""
    kind = rng.random()
    if kind < 0.4:
        aux = _pick(rng, ("Did", "Will", "Can", "Should", "Could"))
        adverb = "really" if rng.random() < 0.3 else ""
        return _join(aux, _noun_phrase(rng), adverb, _pick(rng, VERBS)[0], _noun_phrase(rng), _adjunct(rng)) + "?"
    if kind < 0.7:
        wh = _pick(rng, ("Why did", "When will", "How could", "Where did", "Why would"))
        return _join(wh, _noun_phrase(rng), _pick(rng, VERBS)[0], _noun_phrase(rng)) + "?"
    return _join("Who", _pick(rng, VERBS)[1], _noun_phrase(rng), _adjunct(rng)) + "?"


def _command(rng: np.random.Generator) -> str:
    """`Please wash the shiny kettle carefully before lunch.`"""
    please = "Please" if rng.random() < 0.5 else ""
    verb = _pick(rng, VERBS)[0]
    where = f"{_pick(rng, PREPOSITIONS)} {_pick(rng, PLACES)}" if rng.random() < 0.5 else ""
    how = _pick(rng, ADVERBS) if rng.random() < 0.4 else ""
    text = _join(please, verb if please else verb.capitalize(), _noun_phrase(rng), how, where)
    return text + ("!" if rng.random() < 0.3 else ".")


def _exclamation(rng: np.random.Generator) -> str:
    """`What a strange voice that yellow owl has!`"""
    adjective = _pick(rng, ADJECTIVES)
    noun = _pick(rng, NOUNS)[0]
    head = _pick(rng, EXCLAIMS)
    head = head[:-1] + _article(adjective) if head.endswith(" a") else head
    return _join(head, adjective, noun, _noun_phrase(rng), _pick(rng, ("had", "found", "brought", "made"))) + "!"


def _compound(rng: np.random.Generator) -> str:
    """Two clauses with a comma, or an opener with a comma: `Luckily, the thief vanished.`"""
    if rng.random() < 0.5:
        return f"{_pick(rng, OPENERS)}, " + _lower_first(_statement(rng))
    first = _statement(rng)[:-1]
    joiner = _pick(rng, ("and", "but", "so", "because", "while"))
    return f"{first}, {joiner} " + _lower_first(_statement(rng))


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is a name or a place."""
    first = text.split(" ", 1)[0]
    if first in NAMES or first in PLACES:
        return text
    return text[0].lower() + text[1:]


TEMPLATES = ((_statement, 0.35), (_question, 0.2), (_command, 0.15), (_exclamation, 0.05), (_compound, 0.25))


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence of MIN_WORDS to MAX_WORDS words, first letter capitalised, with end punctuation."""
    funcs = [f for f, _ in TEMPLATES]
    weights = np.array([w for _, w in TEMPLATES])
    while True:
        text = funcs[int(rng.choice(len(funcs), p=weights / weights.sum()))](rng)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            return text[0].upper() + text[1:]


def sentence_pools(seed: int, sizes: dict[str, int]) -> dict[str, list[str]]:
    """Disjoint lists of distinct sentences, one per split, with the requested sizes.

    Every sentence in the result is different, so no sentence is shared between splits.
    Raises UserError if the generator cannot make that many distinct sentences.
    """
    rng = np.random.default_rng([seed, 0x7E47])
    total = sum(sizes.values())
    seen: set[str] = set()
    ordered: list[str] = []
    attempts = 0
    while len(ordered) < total:
        attempts += 1
        if attempts > 20 * total + 1000:
            raise UserError(f"the sentence generator cannot make {total} distinct sentences; "
                            "ask for fewer utterances")
        text = make_sentence(rng)
        if text not in seen:
            seen.add(text)
            ordered.append(text)
    pools, start = {}, 0
    for split, size in sizes.items():
        pools[split] = ordered[start:start + size]
        start += size
    return pools
