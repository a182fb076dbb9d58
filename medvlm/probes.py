"""Probes: does an answer depend on the image, and on the order of the options?

Reviewers judge reasoning from its text. These probes add measured evidence beside it, the way
published audits do ("Beyond Accuracy", arXiv 2603.03437: re-ask with a blank and with a shuffled
image; MMBench's CircularEval: re-ask with the options rotated). For one finished output the same
question is asked again, greedily and with the output's other settings, with:

* ``blank``: a black image of the same size (nothing to see);
* ``shuffle``: another case's image of the same modality (something plausible, but the wrong one);
* ``rotate``: the options rotated, every rotation for up to four options (three spread out above),
  each answer mapped back to the original lettering;
* ``no_think``: without the ``<think>`` instruction (does the reasoning change the answer?).

The verdicts: an answer that survives both the blank and the shuffled image is *image-invariant*;
if its reasoning still makes visual claims (sentences naming findings: "a hyperdense lesion...",
"the square is bright"), that is *image-invariant with visual claims*, the superficial-reasoning
pattern both papers report. Rotation consistency is the share of rotations that pick the same
option. These are evidence for a reviewer, never flags: a correct answer can survive a blank image
because the question gives it away. An answer whose option cannot be read (cut off, or no option
named), the output's or the probe's, decides nothing: two unreadable answers are not "the same".

Everything here is pure except :func:`model_answerer` (which wraps a loaded model): the runner takes
any function that answers, so a fake model with known behaviour proves each verdict in tests.
"""

from __future__ import annotations

import enum
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from medvlm.hints import reasoning_sentences
from medvlm.parsing import parse_completion
from medvlm.prompt import LETTERS, PromptStyle, as_style

if TYPE_CHECKING:  # the store imports this module and must not load torch
    from medvlm.model import LoadedModel
    from medvlm.streaming import GenerationSettings

MAX_ALL_ROTATIONS = 4
"""Up to this many options every rotation is asked; above it, three rotations spread over the options."""


class ProbeKind(str, enum.Enum):
    """What a probe changes before asking again."""

    BLANK = "blank"
    SHUFFLE = "shuffle"
    ROTATE = "rotate"
    NO_THINK = "no_think"


DEFAULT_KINDS: tuple[ProbeKind, ...] = (ProbeKind.BLANK, ProbeKind.SHUFFLE, ProbeKind.ROTATE)
"""What the app, campaigns and evaluation run unless told otherwise (``no_think`` is opt-in)."""

PROBE_LABELS: dict[ProbeKind, str] = {
    ProbeKind.BLANK: "Blank image",
    ProbeKind.SHUFFLE: "Another case's image",
    ProbeKind.ROTATE: "Options rotated",
    ProbeKind.NO_THINK: "Without reasoning",
}

Answerer = Callable[[Image.Image, str, Sequence[str], PromptStyle], str]
"""Answers one question greedily: (image, question, options, prompt style) -> the completion."""


def parse_kinds(text: str | Sequence[str]) -> tuple[ProbeKind, ...]:
    """``"blank,shuffle,rotate"`` (or a list of names) as probe kinds; an unknown name raises ``ValueError``."""
    names = [name.strip() for name in (text.split(",") if isinstance(text, str) else text) if name.strip()]
    kinds = []
    for name in names:
        try:
            kind = ProbeKind(name.replace("-", "_"))
        except ValueError:
            known = ", ".join(kind.value for kind in ProbeKind)
            raise ValueError(f"Unknown probe {name!r}. Choose from: {known}.") from None
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def blank_image(image: Image.Image) -> Image.Image:
    """A black RGB image of the same size: the same number of image tokens, nothing to see."""
    return Image.new("RGB", image.size, (0, 0, 0))


def rotation_shifts(count: int) -> list[int]:
    """The rotations to ask for ``count`` options: each shift moves every option that many letters up.

    >>> rotation_shifts(2), rotation_shifts(4), rotation_shifts(10)
    ([1], [1, 2, 3], [2, 5, 8])
    """
    if count <= MAX_ALL_ROTATIONS:
        return list(range(1, count))
    return sorted({round(step * count / MAX_ALL_ROTATIONS) for step in range(1, MAX_ALL_ROTATIONS)})


def rotate_options(options: Sequence[str], shift: int) -> list[str]:
    """The options as asked under rotation ``shift``: the option at A moves to the last letter, and so on.

    >>> rotate_options(["CT", "MRI", "X-ray"], 1)
    ['MRI', 'X-ray', 'CT']
    """
    return [*options[shift:], *options[:shift]]


def unrotate_letter(letter: str | None, shift: int, count: int) -> str | None:
    """The original letter of the option answered as ``letter`` under rotation ``shift``.

    >>> unrotate_letter("A", 1, 3)  # A) was MRI, originally B
    'B'
    """
    if letter is None:
        return None
    return LETTERS[(LETTERS.index(letter) + shift) % count]


def partner_for(key: str, modality: str | None, pool: Sequence[tuple[str, str | None]]) -> str | None:
    """For the ``shuffle`` probe: another key of ``pool`` ((key, modality) pairs) with the same modality.

    Modalities compare case-blind; a case without one pairs with others without one. The pick is a
    hash of ``key``, so probing the same case again uses the same partner (results stay comparable
    and a resumed campaign asks what an interrupted one did). None when there is no other case.
    """
    wanted = (modality or "").casefold()
    others = sorted({other for other, kind in pool if other != key and (kind or "").casefold() == wanted})
    if not others:
        return None
    return others[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(others)]


_FINDING_WORDS = frozenset(
    """opacity opacities opacification consolidation effusion mass masses lesion lesions nodule nodules
    fracture fractures dislocation hemorrhage haemorrhage bleed infarct infarction edema oedema enhancement
    enhancing hyperdense hypodense isodense hyperintense hypointense isointense hyperechoic hypoechoic
    anechoic echogenic attenuation density densities signal intensity bright dark darker brighter white
    black grey gray shadow shadowing calcification calcified thickening thickened enlarged enlargement
    dilated dilation narrowing stenosis collapse atelectasis pneumothorax air fluid cyst cystic tumor tumour
    ring irregular smooth round oval wedge shaped margin margins border borders contour well-defined
    ill-defined spiculated heterogeneous homogeneous focal diffuse midline shift asymmetry asymmetric
    symmetric visible seen shows showing demonstrates depicted appears appearance visualized noted
    observed evident square""".split()
)
"""Words by which a sentence makes a claim about what is in the image (findings, appearances, seeing)."""
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]*")


def visual_claims(completion: str) -> list[tuple[int, int, str]]:
    """The reasoning's sentences that claim something about the image, as ``(start, end, text)``.

    A sentence is a visual claim when it uses a finding or appearance word (a fixed lexicon, so the
    verdict can be explained: the word is there or not).

    >>> [text for _, _, text in visual_claims(
    ...     "<think>The question asks about the organ. A hypodense lesion is seen.</think><answer>A</answer>")]
    ['A hypodense lesion is seen.']
    """
    return [
        sentence
        for sentence in reasoning_sentences(completion)
        if any(word.lower() in _FINDING_WORDS for word in _WORD.findall(sentence[2]))
    ]


@dataclass(frozen=True)
class ProbeCase:
    """The output being probed: what was asked and what the model answered."""

    image: Image.Image
    question: str
    options: tuple[str, ...]
    completion: str
    style: PromptStyle = PromptStyle.MEDVLM
    partner: Image.Image | None = None
    """Another case's image of the same modality, for the ``shuffle`` probe (None: it is not run)."""
    partner_id: str | None = None
    """What the partner is (an image hash, a record id), kept with the result."""

    @property
    def letter(self) -> str | None:
        """The original answer's letter, read as the app reads it."""
        return _letter(self.completion, self.options, self.style)


@dataclass(frozen=True)
class ProbeAnswer:
    """One re-ask and its answer, mapped back to the original letters."""

    kind: ProbeKind
    variant: str
    """Which one of its kind: ``"black"``, the partner's id, ``"shift 1"``..."""
    options: tuple[str, ...]
    """The options as asked (rotated for ``rotate``)."""
    completion: str
    letter: str | None
    """The option answered, in the *original* lettering (None: no option could be read)."""
    changed: bool | None
    """Whether it differs from the original answer (None: either one names no option, see :func:`answer_changed`)."""
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value, "options": list(self.options)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeAnswer:
        return cls(**{**data, "kind": ProbeKind(data["kind"]), "options": tuple(data["options"])})


@dataclass(frozen=True)
class ProbeSummary:
    """The verdicts of one output's probes (None: the probes that decide it were not run)."""

    image_invariant: bool | None
    """The answer stayed the same with every image probe run (blank, shuffled) whose answer could be read."""
    invariant_with_visual_claims: bool | None
    """Image-invariant, and the reasoning still makes visual claims."""
    rotation_consistency: float | None
    """Share of rotations that picked the original option."""
    reasoning_changes_answer: bool | None
    """Asked without ``<think>``, the answer differs."""
    visual_claims: list[tuple[int, int, str]] = field(default_factory=list)
    changed: dict[str, bool | None] = field(default_factory=dict)
    """Per probe variant (``"blank"``, ``"shuffle"``, ``"rotate shift 1"``): did the answer change (None: not read)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The verdicts as sentences for a reviewer."""
        lines = []
        if self.image_invariant is not None:
            if self.invariant_with_visual_claims:
                lines.append(
                    f"Image-invariant with visual claims: the answer did not change without the image, yet the "
                    f"reasoning makes {len(self.visual_claims)} visual claim(s)."
                )
            elif self.image_invariant:
                lines.append("Image-invariant: the answer did not change without the image.")
            else:
                which = [name for name in ("blank", "shuffle") if self.changed.get(name)]
                lines.append(f"Image-dependent: the answer changed with the {' and the '.join(which)} image.")
        if self.rotation_consistency is not None:
            lines.append(f"Options rotated: the same option in {self.rotation_consistency:.0%} of rotations.")
        if self.reasoning_changes_answer is not None:
            lines.append(
                "Without reasoning the answer changes."
                if self.reasoning_changes_answer
                else "Without reasoning the answer is the same."
            )
        unread = ", ".join(name.replace("_", " ") for name, changed in self.changed.items() if changed is None)
        if unread:
            lines.append(
                f"No option could be read from the original answer or the probe ({unread}): "
                "those probes decide nothing."
            )
        return lines


@dataclass(frozen=True)
class ProbeRequest:
    """One question a probe asks: what to show the model, and how to read its answer back."""

    kind: ProbeKind
    variant: str
    image: Image.Image
    options: tuple[str, ...]
    style: PromptStyle
    shift: int = 0
    """The rotation applied to the options (0: none)."""

    def read(self, completion: str, original: str | None, seconds: float = 0.0) -> ProbeAnswer:
        """The probe's answer from the model's ``completion``, mapped back to the original letters."""
        letter = unrotate_letter(_letter(completion, self.options, self.style), self.shift, len(self.options))
        return ProbeAnswer(
            self.kind, self.variant, self.options, completion, letter, answer_changed(letter, original), seconds
        )


def answer_changed(letter: str | None, original: str | None) -> bool | None:
    """Whether a probe's answer ``letter`` differs from the ``original`` one; None when either names no option.

    A cut-off or option-less answer says nothing about the image or the option order: counted as
    "the same", two unreadable answers would make an output look image-invariant; counted as
    "changed", one would make it look image-dependent. Either way a rate would measure truncation.

    >>> answer_changed("A", "B"), answer_changed("A", "A"), answer_changed(None, None), answer_changed("A", None)
    (True, False, None, None)
    """
    if letter is None or original is None:
        return None
    return letter != original


def probe_requests(case: ProbeCase, kinds: Sequence[ProbeKind] = DEFAULT_KINDS) -> list[ProbeRequest]:
    """Every question the probes ``kinds`` ask about ``case``, in order (batch them, or ask one by one).

    ``shuffle`` asks nothing when the case has no partner image (there may be no other case of
    its modality).
    """
    requests = []
    for kind in map(ProbeKind, kinds):
        if kind is ProbeKind.BLANK:
            requests.append(ProbeRequest(kind, "black", blank_image(case.image), case.options, case.style))
        elif kind is ProbeKind.SHUFFLE and case.partner is not None:
            requests.append(ProbeRequest(kind, case.partner_id or "partner", case.partner, case.options, case.style))
        elif kind is ProbeKind.ROTATE:
            requests += [
                ProbeRequest(
                    kind, f"shift {shift}", case.image, tuple(rotate_options(case.options, shift)), case.style, shift
                )
                for shift in rotation_shifts(len(case.options))
            ]
        elif kind is ProbeKind.NO_THINK:
            requests.append(ProbeRequest(kind, "no think", case.image, case.options, PromptStyle.NO_THINK))
    return requests


def run_probes(
    case: ProbeCase,
    answer: Answerer,
    kinds: Sequence[ProbeKind] = DEFAULT_KINDS,
    *,
    cancel: threading.Event | None = None,
) -> Iterator[ProbeAnswer]:
    """Ask each probe in turn and yield its answer as soon as it is in (a UI shows each as it ends).

    Stops before the next question once ``cancel`` is set.
    """
    original = case.letter
    for request in probe_requests(case, kinds):
        if cancel is not None and cancel.is_set():
            return
        started = time.perf_counter()
        completion = answer(request.image, case.question, request.options, request.style)
        yield request.read(completion, original, round(time.perf_counter() - started, 3))


def greedy_settings(settings: GenerationSettings) -> GenerationSettings:
    """``settings`` decoded greedily: a sampled re-ask would change its answer by chance, and the probe
    would measure the dice instead of the image. Token and pixel budgets stay the output's own."""
    return replace(settings, do_sample=False, seed=None)


def ask_in_batches(
    loaded: LoadedModel,
    cases: Sequence[ProbeCase],
    kinds: Sequence[ProbeKind],
    settings: GenerationSettings,
    batch_size: int,
    run: Callable[..., Any] | None = None,
) -> list[tuple[ProbeAnswer, ...]]:
    """Every case's probes, asked ``batch_size`` questions to a ``generate`` call; each case's answers in order.

    For evaluations and campaigns, where a batch of questions costs little more than one. Greedy
    whatever ``settings`` say (see :func:`model_answerer`); each prompt style in its own batches.
    ``run`` replaces :func:`medvlm.streaming.answer_batch` (the app passes its ZeroGPU-wrapped one).
    """
    from medvlm.streaming import answer_batch

    greedy = greedy_settings(settings)
    asked = [(index, request) for index, case in enumerate(cases) for request in probe_requests(case, kinds)]
    originals = [case.letter for case in cases]
    answers: dict[int, ProbeAnswer] = {}
    for style in dict.fromkeys(request.style for _, request in asked):
        same = [
            (position, index, request) for position, (index, request) in enumerate(asked) if request.style is style
        ]
        for first in range(0, len(same), batch_size):
            part = same[first : first + batch_size]
            started = time.perf_counter()
            replies = (run or answer_batch)(
                loaded,
                [request.image for _, _, request in part],
                [cases[index].question for _, index, _ in part],
                [list(request.options) for _, _, request in part],
                greedy,
                style=style,
            )
            seconds = round((time.perf_counter() - started) / len(part), 3)
            for (position, index, request), reply in zip(part, replies, strict=True):
                answers[position] = request.read(reply.completion, originals[index], seconds)
    return [
        tuple(answers[position] for position, (owner, _) in enumerate(asked) if owner == index)
        for index in range(len(cases))
    ]


def summarize(completion: str, answers: Sequence[ProbeAnswer]) -> ProbeSummary:
    """The verdicts of the probes that were run on the output ``completion``; an answer that names no option
    (or an output that named none) decides none of them."""
    decided = [a for a in answers if a.changed is not None]
    image_probes = [a for a in decided if a.kind in (ProbeKind.BLANK, ProbeKind.SHUFFLE)]
    rotations = [a for a in decided if a.kind is ProbeKind.ROTATE]
    no_think = [a for a in decided if a.kind is ProbeKind.NO_THINK]
    claims = visual_claims(completion)
    invariant = not any(a.changed for a in image_probes) if image_probes else None
    return ProbeSummary(
        image_invariant=invariant,
        invariant_with_visual_claims=None if invariant is None else invariant and bool(claims),
        rotation_consistency=sum(not a.changed for a in rotations) / len(rotations) if rotations else None,
        reasoning_changes_answer=no_think[0].changed if no_think else None,
        visual_claims=claims,
        changed={_name(a): a.changed for a in answers},
    )


@dataclass(frozen=True)
class ProbedSample:
    """One probed output of an evaluation or a campaign, with its correct answer when known."""

    correct: str | None
    letter: str | None
    answers: tuple[ProbeAnswer, ...]
    summary: ProbeSummary


def probes_to_dict(sample: ProbedSample) -> dict[str, Any]:
    """What an evaluation sample or an export keeps of its probes: every answer and the verdicts."""
    return {"answers": [answer.to_dict() for answer in sample.answers], "summary": sample.summary.to_dict()}


def probe_record(
    completion: str, correct: str | None, letter: str | None, answers: Sequence[ProbeAnswer]
) -> dict[str, Any] | None:
    """An output's probes as an export holds them, marked as a machine's annotation (``made_by: probe``, where a
    review is a person's); None when the output was never probed."""
    if not answers:
        return None
    sample = ProbedSample(correct, letter, tuple(answers), summarize(completion, answers))
    return {"made_by": "probe", **probes_to_dict(sample)}


def probed_from_dict(data: dict[str, Any], correct: str | None, letter: str | None, completion: str) -> ProbedSample:
    """The inverse of :func:`probes_to_dict`; the verdicts are worked out again from the answers, and whether
    each answer changed again from the letters (files written before :func:`answer_changed` counted two
    unreadable answers as the same)."""
    answers = tuple(
        replace(answer, changed=answer_changed(answer.letter, letter))
        for answer in map(ProbeAnswer.from_dict, data.get("answers", []))
    )
    return ProbedSample(correct, letter, answers, summarize(completion, answers))


RATE_COLUMNS = (
    ("accuracy", "original", "accuracy"),
    ("accuracy", "blank", "blank-image accuracy"),
    ("accuracy", "shuffle", "shuffled-image accuracy"),
    ("accuracy", "circular", "accuracy in all rotations"),
    ("changed", "image", "answer changed without its image"),
    ("rotation_consistency", None, "rotation consistency"),
    ("invariant_with_visual_claims", None, "image-invariant with visual claims"),
)
"""The columns of a table of :func:`probe_rates`: (key, sub-key, title), for reports."""


def probe_rates(samples: Sequence[ProbedSample]) -> dict[str, Any]:
    """Accuracy under each probe, how often the answer changed, rotation consistency, over ``samples``.

    ``accuracy.circular`` is MMBench's CircularEval: right in the original order *and* in every
    rotation. A rate is None when no sample ran the probes it needs. An answer that names no option is
    wrong in every accuracy, and left out of every "changed" rate (:func:`answer_changed`).
    """

    def share(values: Sequence[bool | None]) -> float | None:
        known = [value for value in values if value is not None]
        return sum(known) / len(known) if known else None

    def of(kind: ProbeKind) -> list[tuple[ProbedSample, list[ProbeAnswer]]]:
        picked = [(sample, [a for a in sample.answers if a.kind is kind]) for sample in samples]
        return [(sample, answers) for sample, answers in picked if answers]

    known = [sample for sample in samples if sample.correct is not None]
    accuracy: dict[str, float | None] = {"original": share([s.letter == s.correct for s in known])}
    for kind in (ProbeKind.BLANK, ProbeKind.SHUFFLE, ProbeKind.NO_THINK):
        accuracy[kind.value] = share([a[0].letter == s.correct for s, a in of(kind) if s.correct is not None])
    rotated = [(s, a) for s, a in of(ProbeKind.ROTATE) if s.correct is not None]
    accuracy["circular"] = share([s.letter == s.correct and all(x.letter == s.correct for x in a) for s, a in rotated])
    summaries = [sample.summary for sample in samples]
    consistency = [s.rotation_consistency for s in summaries if s.rotation_consistency is not None]
    return {
        "n": len(samples),
        "accuracy": accuracy,
        "changed": {
            ProbeKind.BLANK.value: share([a[0].changed for _, a in of(ProbeKind.BLANK)]),
            ProbeKind.SHUFFLE.value: share([a[0].changed for _, a in of(ProbeKind.SHUFFLE)]),
            "image": share([not s.image_invariant for s in summaries if s.image_invariant is not None]),
            ProbeKind.NO_THINK.value: share([a[0].changed for _, a in of(ProbeKind.NO_THINK)]),
        },
        "rotation_consistency": sum(consistency) / len(consistency) if consistency else None,
        "invariant_with_visual_claims": share([s.invariant_with_visual_claims for s in summaries]),
    }


def _name(answer: ProbeAnswer) -> str:
    return f"rotate {answer.variant}" if answer.kind is ProbeKind.ROTATE else answer.kind.value


def _letter(completion: str, options: Sequence[str], style: PromptStyle | str) -> str | None:
    require_think = as_style(style) is not PromptStyle.NO_THINK
    return parse_completion(completion, list(options), require_think=require_think, final=True).letter


def model_answerer(
    loaded: LoadedModel, settings: GenerationSettings, run: Callable[..., Any] | None = None
) -> Answerer:
    """An :data:`Answerer` on a loaded model: greedy, with ``settings``' token and pixel budgets.

    ``run`` replaces :func:`medvlm.streaming.answer_batch` (the app passes its ZeroGPU-wrapped one).
    """
    from medvlm.streaming import answer_batch

    greedy = greedy_settings(settings)

    def answer(image: Image.Image, question: str, options: Sequence[str], style: PromptStyle) -> str:
        return (run or answer_batch)(loaded, [image], [question], [list(options)], greedy, style=style)[0].completion

    return answer
