"""VQA accuracy as the official evaluation (the VQA API's ``vqaEval.py``) computes it.

An answer is normalised in two passes: punctuation (``processPunctuation``), then digits, articles and
contractions (``processDigitArticle``). A question's accuracy is min(#humans who gave the answer / 3, 1)
averaged over the 10 subsets of 9 of its 10 human answers; for an answer ``c`` humans gave this is
0, 0.3, 0.6, 0.9 or 1 for c = 0, 1, 2, 3, >= 4, the confidence UnIVAL/OFA VQA TSVs list per answer.
"""
import re
from collections import Counter

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
# A period not followed by a digit: vqaEval.py's pattern reads "(?!<=\d)(\.)(?!\d)", a lookahead for the
# text "<=digit" rather than the lookbehind it looks like, so "2.5" keeps its period and "2." loses it.
PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
# vqaEval.py's contraction table, word -> replacement (its entries with capitals, "Im", "Ive", "Id've" and
# "I'dve", never match the lower-cased words and are left out; "somebody'd" -> "somebodyd" is as there).
CONTRACTIONS = dict(pair.split("=") for pair in """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am
mightnt=mightn't mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't
mustve=must've neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at
'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's
shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've
somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll
somebodys=somebody's someoned=someone'd someoned've=someone'd've someone'dve=someone'd've
someonell=someone'll someones=someone's somethingd=something'd somethingd've=something'd've
something'dve=something'd've somethingll=something'll thats=that's thered=there'd thered've=there'd've
there'dve=there'd've therere=there're theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've
theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've
weve=we've werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've whens=when's
whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll
whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've
wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd
youd've=you'd've you'dve=you'd've youll=you'll youre=you're youve=you've
""".split())


def strip_punctuation(text):
    """``processPunctuation``: each mark is deleted where it touches a space (or the text has a comma
    between digits, "1,000"), otherwise replaced by a space; then periods not before a digit go."""
    glued = DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if touches_space or glued else " ")
    # vqaEval.py passes re.UNICODE where re.sub takes its count: at most 32 periods are removed
    return PERIOD.sub("", out, count=re.UNICODE)


def normalise_words(text):
    """``processDigitArticle``: lower-cased words, number words as digits, articles dropped,
    contractions given their apostrophes."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def clean(text):
    """Newlines and tabs as spaces, outer spaces stripped: done to every answer before anything else."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalise_answer(text):
    """An answer as the official evaluation compares it."""
    return normalise_words(strip_punctuation(clean(text)))


def official_accuracy(answer, human_answers):
    """A question's accuracy exactly as vqaEval.py computes it from its human answers (10 in VQA):
    answers are normalised only when the humans disagree (their cleaned texts differ), and the
    accuracy is min(matches among the other answers / 3, 1) averaged over leaving each one out."""
    humans = [clean(h) for h in human_answers]
    answer = clean(answer)
    if len(set(humans)) > 1:
        humans = [normalise_answer(h) for h in humans]
        answer = normalise_answer(answer)
    return leave_one_out_accuracy(sum(h == answer for h in humans), len(humans))


def leave_one_out_accuracy(matches, humans):
    """min(matches among the other answers / 3, 1) averaged over leaving out each of ``humans``
    answers, ``matches`` of which equal the prediction: leaving out one of those leaves matches - 1."""
    if not humans:
        return 0.0
    return (matches * min(1.0, (matches - 1) / 3) + (humans - matches) * min(1.0, matches / 3)) / humans


def answer_confidences(human_answers):
    """{normalised answer: official accuracy of predicting it}, most given first: a VQA TSV row's
    ``conf|!+answer`` candidates. When the humans agree exactly, the one answer is kept as they gave
    it, as vqaEval.py leaves it unnormalised then."""
    humans = [clean(h) for h in human_answers]
    if len(set(humans)) > 1:
        humans = [normalise_answer(h) for h in humans]
    counts = Counter(h for h in humans if h)
    return {answer: leave_one_out_accuracy(count, len(humans)) for answer, count in counts.most_common()}
