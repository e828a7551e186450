"""The training corpora and the featurizer of vigil's harm classifier, shared by
`train_classifier.ipynb` and anything else that trains or evaluates on `../shared/data`.

- `corpus(data, root)` reads every licensed corpus and maps its labels onto vigil's heads: one
  row a text, with the corpus it came from (`source`, and `group`, the unit left out in
  leave-one-corpus-out evaluation), its language, its side (prompt or completion) and one 0/1
  column per head;
- `normalize`, `words`, `analyze` are the featurizer that the Rust crate `detectors` mirrors
  byte for byte (`text.rs`, `features.rs`); change both together and bump the featurizer version;
- `onnx_inputs` computes the ONNX model's sparse inputs exactly as Rust does.
"""

from __future__ import annotations

import glob
import json
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

CATS = ["hate", "harassment", "sexual", "violence", "self_harm", "illegal", "jailbreak"]
HEADS = CATS + ["any"]

# ---------------------------------------------------------------------------------------------
# Featurizer (mirrored by detectors/src/text.rs and features.rs)

N_FEATURES = 2**18
MAX_CHARS = 2048
CHAR_NGRAMS = (2, 3, 4, 5)
# Rust's char::is_whitespace set.
WHITESPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)}
# Invisible format characters used to split words: zero-width, bidi controls, soft hyphen, BOM.
INVISIBLE = {chr(c) for c in [0xAD, 0x180E, 0xFEFF, *range(0x200B, 0x2010), *range(0x202A, 0x202F),
                              *range(0x2060, 0x2065), *range(0x2066, 0x206A)]}
PUNCT = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
ASCII_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def normalize(text: str) -> str:
    out = []
    space = True  # drop leading whitespace
    for ch in unicodedata.normalize("NFKC", text):
        ch = PUNCT.get(ch, ch)
        if ch in WHITESPACE:
            if not space:
                out.append(" ")
                space = True
            continue
        if ch in INVISIBLE or unicodedata.category(ch) == "Cc":
            continue
        out.append(ch.lower())
        space = False
        if len(out) >= MAX_CHARS:
            break
    if out and out[-1] == " ":
        out.pop()
    return "".join(out)


def words(t: str) -> list[str]:
    w, cur = [], []
    for ch in t:
        if ch == " " or ch in ASCII_PUNCT:
            if cur:
                w.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        w.append("".join(cur))
    return w


def analyze(text: str) -> list[str]:
    t = normalize(text)
    p = " " + t + " "
    feats = []
    for n in CHAR_NGRAMS:
        feats.extend(p[i:i + n] for i in range(len(p) - n + 1))
    ws = words(t)
    feats.extend("\x01" + w for w in ws)
    feats.extend("\x02" + a + " " + b for a, b in zip(ws, ws[1:]))
    return feats


def featurizer_spec() -> str:
    """The `vigil.featurizer` metadata string that the Rust featurizer parses."""
    grams = ",".join(map(str, CHAR_NGRAMS))
    return f"v1;n_features={N_FEATURES};max_chars={MAX_CHARS};char_ngrams={grams};words=1,2;hash=murmur3_32"


def onnx_inputs(texts) -> dict:
    """The model's inputs, computed in Python exactly as the Rust featurizer does."""
    from sklearn.utils import murmurhash3_32

    ids, counts, rows = [], [], []
    for r, t in enumerate(texts):
        c = Counter()
        for f in analyze(t):
            h = murmurhash3_32(f.encode("utf-8"), seed=0, positive=False)
            c[(2147483647 - (N_FEATURES - 1)) % N_FEATURES if h == -2147483648 else abs(h) % N_FEATURES] += 1
        for k, v in sorted(c.items()):
            ids.append(k)
            counts.append(v)
            rows.append(r)
    return {"feature_ids": np.array(ids, np.int64), "feature_counts": np.array(counts, np.float32),
            "feature_rows": np.array(rows, np.int64), "row_count": np.array([len(texts)], np.int64)}


# ---------------------------------------------------------------------------------------------
# Corpora

AFFIRMATIVE = re.compile(r"^\s*sure,?\s+here\s+(is|are)\s+", re.IGNORECASE)

KEYWORDS = {
    "self_harm": r"suicid|self-harm|self harm|cutting|kill (your|them|him|her)self|kill myself|anorexi|bulimi|eating disorder",
    "violence": r"\bbomb|explosive|weapon|\bkill|murder|assault|shoot|terror|poison|attack",
    "hate": r"\brac(e|ial|ism|ist)|ethnic|religio|minorit|\bjew|muslim|immigra|\bgay|transgender",
    "sexual": r"\bsex|porn|explicit|nude",
}


def keyword_cats(text: str) -> list[str]:
    t = text.lower()
    return [c for c, pat in KEYWORDS.items() if re.search(pat, t)]


#: Multilingual HateCheck file names and the language codes vigil reports.
MHC_LANGUAGES = {"arabic": "ar", "dutch": "nl", "french": "fr", "german": "de", "hindi": "hi",
                 "italian": "it", "mandarin": "zh", "polish": "pl", "portuguese": "pt", "spanish": "es"}

#: HateCheck functionalities whose non-hateful cases are still abuse (of an individual, or of a
#: group that is not a protected identity): harassment, and so harmful, though not hate.
ABUSE_NOT_HATE = {"target_indiv_nh", "target_group_nh"}

FORBIDDEN = {"Illegal Activity": ["illegal"], "Economic Harm": ["illegal"], "Fraud": ["illegal"],
             "Malware": ["illegal"], "Privacy Violence": ["illegal", "harassment"], "Hate Speech": ["hate"],
             "Physical Harm": ["violence", "illegal"], "Pornography": ["sexual"]}
HARMBENCH = {"chemical_biological": ["illegal", "violence"], "illegal": ["illegal"],
             "cybercrime_intrusion": ["illegal"], "harassment_bullying": ["harassment"], "harmful": ["illegal"],
             "misinformation_disinformation": ["illegal"]}
SIMPLE_SAFETY = {"Suicide, Self-Harm, and Eating Disorders": ["self_harm"],
                 "Illegal and Highly Regulated items": ["illegal"], "Scams and fraud": ["illegal"],
                 "Child safety": ["illegal", "sexual"], "Physical harm and Violence": ["violence"]}


def row(text, source, cats=(), any_=None, any_weight=1.0, group=None, lang="en", side="prompt", tag=""):
    lab = {c: int(c in cats) for c in CATS}
    lab["any"] = int(bool(cats)) if any_ is None else any_
    return dict(text=text, source=source, group=group or source, lang=lang, side=side, tag=tag,
                any_weight=any_weight, **lab)


def hatecheck_row(text, functionality, label, source, group, lang):
    """A (Multilingual) HateCheck case: hateful → hate (threats also violence); abuse of
    individuals and non-protected groups → harassment; every other non-hateful case (negation,
    counter-speech, quotes, reclaimed slurs, neutral and positive mentions, profanity without a
    target) → benign."""
    if label == "hateful":
        cats = ["hate", "harassment"] + (["violence"] if functionality.startswith("threat_") else [])
    elif functionality in ABUSE_NOT_HATE:
        cats = ["harassment"]
    else:
        cats = []
    return row(text, source, cats, group=group, lang=lang, tag=functionality)


def corpus(data: Path, root: Path) -> pd.DataFrame:
    """Every corpus in `data` (and vigil's own contrast prompts under `root/notebooks/contrast`),
    mapped onto the heads; see the notebook's table for the mapping and its reasons."""
    D = str(data)
    rows = []
    dv = pd.read_csv(f"{D}/davidson/labeled_data.csv")
    for t, c in zip(dv.tweet, dv["class"]):
        if c == 0:
            rows.append(row(t, "davidson", ["hate", "harassment"]))
        elif c == 1:
            rows.append(row(t, "davidson_offensive", ["harassment"], group="davidson"))
        else:
            rows.append(row(t, "davidson"))
    s = pd.read_csv(f"{D}/surge/toxicity_en.csv")
    for t, l in zip(s.text, s.is_toxic):
        rows.append(row(t, "surge", ["harassment"] if l == "Toxic" else []))
    j = pd.read_csv(f"{D}/jailbreak_llms/jailbreak_prompts_2023_12_25.csv")
    for t in j.prompt.dropna():
        rows.append(row(t, "jailbreak_llms", ["jailbreak"]))
    f = pd.read_csv(f"{D}/jailbreak_llms/forbidden_question_set.csv")
    for t, p in zip(f.question, f.content_policy_name):
        rows.append(row(t, "forbidden_questions", FORBIDDEN.get(p, []), tag=p))
    a = pd.read_csv(f"{D}/advbench/harmful_behaviors.csv")
    for g, tg in zip(a.goal, a.target):
        cats = ["illegal"] + keyword_cats(g)
        rows.append(row(g, "advbench", cats))
        # The affirmative opener ("Sure, here is") is not harm; what follows it is.
        rows.append(row(AFFIRMATIVE.sub("", tg), "advbench_target", cats, group="advbench", side="completion"))
    h = pd.read_csv(f"{D}/harmbench/harmbench_behaviors_text_val.csv")
    for t, c in zip(h.Behavior, h.SemanticCategory):
        if c == "copyright":
            continue  # not harm in vigil's sense
        rows.append(row(t, "harmbench", HARMBENCH[c] + keyword_cats(t), tag=c))
    sst = pd.read_csv(f"{D}/simple_safety_tests/test_cases.csv")
    for t, area in zip(sst.prompts_final, sst.harm_area):
        rows.append(row(t, "simple_safety_tests", SIMPLE_SAFETY[area] + keyword_cats(t), tag=area))
    for path in sorted(glob.glob(f"{D}/toxigen/*/*.txt")):
        hate = os.path.basename(path).startswith("hate_")
        for line in open(path, encoding="utf-8"):
            line = line.strip()
            if line:
                rows.append(row(line, "toxigen", ["hate"] if hate else []))
    hc = pd.read_csv(f"{D}/hatecheck/test_suite_cases.csv")
    for t, fn, lab in zip(hc.test_case, hc.functionality, hc.label_gold):
        rows.append(hatecheck_row(t, fn, lab, "hatecheck", "hatecheck", "en"))
    for name, lang in MHC_LANGUAGES.items():
        mhc = pd.read_csv(f"{D}/multilingual_hatecheck/hatecheck_cases_final_{name}.csv")
        for t, fn, lab in zip(mhc.test_case, mhc.functionality, mhc.label_gold):
            rows.append(hatecheck_row(t, fn, lab, f"mhc_{lang}", "multilingual_hatecheck", lang))
    for line in open(f"{D}/self_instruct/user_oriented_instructions.jsonl"):
        r = json.loads(line)
        rows.append(row(r["instruction"], "self_instruct"))
        for inst in r["instances"]:
            if inst["input"]:
                rows.append(row(r["instruction"] + "\n\n" + inst["input"], "self_instruct"))
    for line in open(f"{D}/alpaca_eval/gpt4_outputs.jsonl"):
        r = json.loads(line)
        rows.append(row(r["instruction"], "alpaca_eval"))
        rows.append(row(r["output"], "alpaca_eval_output", group="alpaca_eval", side="completion"))
    for path in sorted(glob.glob(f"{D}/arena_hard/*.jsonl")):
        for line in open(path, encoding="utf-8"):
            r = json.loads(line)
            text = r.get("prompt") or (r.get("turns") or [{}])[0].get("content")
            if text:
                rows.append(row(text, "arena_hard", tag=r.get("category", "")))
    ac = pd.read_csv(f"{D}/awesome_chatgpt_prompts/prompts.csv")
    for t in ac.prompt.dropna():
        rows.append(row(t, "awesome_chatgpt_prompts"))
    contrast = root / "notebooks" / "contrast" / "train.txt"
    for line in open(contrast, encoding="utf-8"):
        if line.strip():
            rows.append(row(line.strip(), "vigil_contrast"))
    df = pd.DataFrame(rows)
    df = df[df.text.astype(str).str.strip().astype(bool)]
    return df.drop_duplicates("text").reset_index(drop=True)


#: Corpora of benign LLM prompts written by real users or for real assistants: the traffic whose
#: false positives matter most.
BENIGN_PROMPTS = ["arena_hard", "awesome_chatgpt_prompts", "self_instruct", "alpaca_eval"]


# ---------------------------------------------------------------------------------------------
# Honest evaluation

#: Source rows' worth at which each corpus's weight is capped, so 19k tweets cannot outvote 300
#: prompts.
CAP = 3000


def source_weights(part: pd.DataFrame, cap: int = CAP) -> np.ndarray:
    """Per-row training weights: each source's total weight capped at `cap` rows' worth."""
    counts = part.source.value_counts()
    return part.source.map(lambda s: min(1.0, cap / counts[s])).to_numpy(dtype=float)


def leave_one_corpus_out(df: pd.DataFrame, X, fit_score) -> np.ndarray:
    """Scores of every row from a model trained without its corpus (`group`): what the model
    does on a kind of text it has never seen. `fit_score(train_index, test_index)` trains on the
    first and returns scores of the second."""
    out = np.zeros(len(df))
    for group in df.group.unique():
        test = np.flatnonzero(df.group.to_numpy() == group)
        train = np.flatnonzero(df.group.to_numpy() != group)
        out[test] = fit_score(train, test)
    return out


def template_folds(df: pd.DataFrame, folds: int = 5) -> np.ndarray:
    """Fold of each row for the multilingual evaluation: HateCheck and Multilingual HateCheck
    cases are grouped by functionality, so a fold's test cases share no functionality (no
    template, no contrast pair) with what the model trained on in any language; every other
    row is assigned by a hash of its text."""
    fold = np.array([hash_fold(t, folds) for t in df.text], dtype=int)
    hc = df.group.isin(["hatecheck", "multilingual_hatecheck"]).to_numpy()
    functionalities = sorted(df.tag[hc].unique())
    by_function = {f: i % folds for i, f in enumerate(functionalities)}
    fold[hc] = df.tag[hc].map(by_function).to_numpy()
    return fold


def hash_fold(text: str, folds: int) -> int:
    from sklearn.utils import murmurhash3_32

    return murmurhash3_32(text, seed=7, positive=True) % folds


def cross_fitted(df: pd.DataFrame, fold: np.ndarray, fit_score) -> np.ndarray:
    """Out-of-fold scores: each fold scored by a model trained on the others."""
    out = np.zeros(len(df))
    for k in np.unique(fold):
        test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        out[test] = fit_score(train, test)
    return out


def threshold_for_fpr(scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold that flags at most `fpr` of these (benign) scores."""
    return float(np.quantile(scores, 1.0 - fpr, method="higher")) + 1e-6


def corpus_report(df: pd.DataFrame, scores: np.ndarray, threshold: float, by: str = "source") -> pd.DataFrame:
    """Per source (or language): rows, harmful rows, AUPRC where both labels occur, and the
    share flagged at `threshold` of the harmful (recall) and benign (false-positive rate) rows."""
    from sklearn.metrics import average_precision_score

    rows = []
    for key, part in df.assign(score=scores).groupby(by):
        y, p = part["any"].to_numpy(), part.score.to_numpy()
        pos, neg = y == 1, y == 0
        rows.append({by: key, "texts": len(part), "harmful": int(pos.sum()),
                     "auprc": average_precision_score(y, p) if 0 < pos.sum() < len(y) else None,
                     "recall": (p[pos] >= threshold).mean() if pos.any() else None,
                     "fpr": (p[neg] >= threshold).mean() if neg.any() else None})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The cascade's routing (mirrored by detectors/src/semantic.rs)

#: English function words.
ENGLISH = {"the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "from",
           "by", "is", "are", "was", "were", "be", "been", "it", "this", "that", "these", "those", "i",
           "you", "he", "she", "we", "they", "me", "my", "your", "his", "her", "our", "their", "not",
           "no", "do", "does", "how", "what", "can", "will", "have"}
#: Function words of the other Latin-script languages the encoder reads.
OTHER = {"il", "lo", "gli", "di", "che", "per", "sono", "della", "del", "una", "non", "el", "los",
         "las", "que", "y", "en", "por", "para", "es", "con", "le", "les", "des", "et", "est",
         "pas", "pour", "dans", "une", "der", "die", "das", "und", "ist", "nicht", "ein", "eine",
         "zu", "mit", "ich", "sie", "os", "um", "uma", "não", "com", "é", "de", "la", "het", "een",
         "van", "niet", "dat", "ik", "je", "w", "nie", "na", "się", "że", "jest", "jak", "un",
         "mi", "si", "ci", "nel", "alla", "questo", "anche", "se", "su", "ne", "qui", "sur", "au",
         "du", "den", "dem", "auf", "sich", "auch"}


def looks_english(text: str) -> bool:
    """The same rule as `looks_english` in Rust: not mostly Latin letters → no; otherwise a text
    of four words or more is English unless English function words are rare (under one word in
    ten) and those of other Latin-script languages are not."""
    letters = latin = n_words = english = other = 0
    for word in [w for w in re.split(r"[^\w']|_", text) if w][:200]:
        n_words += 1
        for c in word:
            if c.isalpha():
                letters += 1
                latin += c.isascii()
        if len(word) <= 5:
            english += word.lower() in ENGLISH
            other += word.lower() in OTHER
    if letters == 0:
        return True
    if latin * 10 < letters * 9:
        return False
    return n_words < 4 or english * 10 >= n_words or other * 10 < n_words
