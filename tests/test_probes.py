"""Probes: each verdict proved on fake models whose dependence on the image is known, then on real
tiny checkpoints taught to look at the image or to ignore it."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

import pytest
from PIL import Image, ImageStat

from medvlm.model import load_model
from medvlm.probes import (
    ProbeCase,
    ProbedSample,
    ProbeKind,
    model_answerer,
    parse_kinds,
    partner_for,
    probe_rates,
    probed_from_dict,
    probes_to_dict,
    rotate_options,
    rotation_shifts,
    run_probes,
    summarize,
    unrotate_letter,
    visual_claims,
)
from medvlm.prompt import LETTERS, PromptStyle
from medvlm.square_task import OPTIONS, QUESTION, square_image
from medvlm.streaming import GenerationSettings
from medvlm.ui.ask.probe_handlers import ProbeSection, probes_markdown

BRIGHT, DARK = square_image(random.Random(1), True), square_image(random.Random(2), False)


def looking(image: Image.Image, question: str, options: Sequence[str], style: PromptStyle) -> str:
    """Answers the option naming what the image shows, in whatever order the options come."""
    seen = "Bright" if ImageStat.Stat(image.convert("L")).mean[0] > 128 else "Dark"
    return f"<think>The square is {seen.lower()}.</think><answer>{LETTERS[list(options).index(seen)]}</answer>"


def blind(image: Image.Image, question: str, options: Sequence[str], style: PromptStyle) -> str:
    """Always claims a bright square and answers A."""
    return "<think>The square is bright.</think><answer>A</answer>"


def case(answerer, image=BRIGHT, partner=DARK, options=OPTIONS) -> ProbeCase:
    completion = answerer(image, QUESTION, options, PromptStyle.MEDVLM)
    return ProbeCase(image, QUESTION, tuple(options), completion, partner=partner, partner_id="dark-1")


def test_an_answer_read_from_the_image_changes_with_a_blank_and_a_shuffled_image():
    probed = case(looking)
    answers = list(run_probes(probed, looking))
    assert [(a.kind, a.variant, a.letter, a.changed) for a in answers] == [
        (ProbeKind.BLANK, "black", "B", True),
        (ProbeKind.SHUFFLE, "dark-1", "B", True),
        (ProbeKind.ROTATE, "shift 1", "A", False),
    ]
    summary = summarize(probed.completion, answers)
    assert summary.image_invariant is False and summary.invariant_with_visual_claims is False
    assert summary.rotation_consistency == 1.0
    assert summary.lines()[0] == "Image-dependent: the answer changed with the blank and the shuffle image."


def test_an_answer_that_ignores_the_image_but_describes_it_is_image_invariant_with_visual_claims():
    probed = case(blind)
    summary = summarize(probed.completion, list(run_probes(probed, blind)))
    assert summary.image_invariant is True and summary.invariant_with_visual_claims is True
    assert [text for _, _, text in summary.visual_claims] == ["The square is bright."]
    # Always "A": under the one rotation of two options A is the other option.
    assert summary.rotation_consistency == 0.0
    assert summary.lines()[0].startswith("Image-invariant with visual claims")


def test_an_image_invariant_answer_without_visual_claims_is_not_called_superficial():
    def terse(image, question, options, style):
        return "<think>The question gives it away.</think><answer>A</answer>"

    probed = case(terse)
    summary = summarize(probed.completion, list(run_probes(probed, terse)))
    assert summary.image_invariant is True and summary.invariant_with_visual_claims is False
    assert summary.lines()[0] == "Image-invariant: the answer did not change without the image."


def test_rotations_map_answers_back_to_the_original_letters():
    options = ("CT", "MRI", "X-ray", "Ultrasound")

    def always_mri(image, question, options, style):
        return f"<think>It is MRI.</think><answer>{LETTERS[list(options).index('MRI')]}</answer>"

    probed = case(always_mri, options=options)
    rotations = [a for a in run_probes(probed, always_mri, [ProbeKind.ROTATE])]
    assert [a.options[0] for a in rotations] == ["MRI", "X-ray", "Ultrasound"]
    assert {a.letter for a in rotations} == {"B"} and not any(a.changed for a in rotations)
    first_letter = [a for a in run_probes(case(blind, options=options), blind, [ProbeKind.ROTATE])]
    assert [a.letter for a in first_letter] == ["B", "C", "D"]
    assert summarize(case(blind, options=options).completion, first_letter).rotation_consistency == 0.0


def test_rotation_helpers():
    assert rotation_shifts(2) == [1] and rotation_shifts(3) == [1, 2] and rotation_shifts(5) == [1, 2, 4]
    assert rotation_shifts(10) == [2, 5, 8]
    for count in range(2, 11):
        options = [f"o{i}" for i in range(count)]
        for shift in rotation_shifts(count):
            rotated = rotate_options(options, shift)
            for index, text in enumerate(rotated):
                assert options[LETTERS.index(unrotate_letter(LETTERS[index], shift, count))] == text
    assert unrotate_letter(None, 1, 2) is None


def test_no_think_probe_asks_in_the_no_think_style():
    asked = []

    def depends_on_reasoning(image, question, options, style):
        asked.append(style)
        if style is PromptStyle.NO_THINK:
            return "<answer>B</answer>"
        return "<think>The square is bright.</think><answer>A</answer>"

    probed = case(depends_on_reasoning)
    answers = list(run_probes(probed, depends_on_reasoning, [ProbeKind.NO_THINK]))
    assert asked[-1] is PromptStyle.NO_THINK and answers[0].letter == "B" and answers[0].changed
    summary = summarize(probed.completion, answers)
    assert summary.reasoning_changes_answer is True and summary.image_invariant is None
    assert summary.lines() == ["Without reasoning the answer changes."]


def test_shuffle_is_passed_over_without_a_partner_and_cancel_stops_before_the_next_probe():
    probed = case(looking, partner=None)
    assert [a.kind for a in run_probes(probed, looking)] == [ProbeKind.BLANK, ProbeKind.ROTATE]
    cancel = threading.Event()
    stream = run_probes(case(looking), looking, cancel=cancel)
    first = next(stream)
    cancel.set()
    assert first.kind is ProbeKind.BLANK and list(stream) == []


def test_the_blank_probe_keeps_the_image_size():
    seen = []

    def record(image, question, options, style):
        seen.append(image)
        return looking(image, question, options, style)

    big = Image.new("RGB", (300, 200), (255, 255, 255))
    list(run_probes(ProbeCase(big, QUESTION, OPTIONS, looking(big, QUESTION, OPTIONS, "medvlm")), record))
    assert seen[0].size == (300, 200) and seen[0].getextrema() == ((0, 0), (0, 0), (0, 0))


def test_partners_share_the_modality_and_are_stable():
    pool = [("a", "CT"), ("b", "ct"), ("c", "MRI"), ("d", "CT"), ("e", None), ("f", None)]
    assert partner_for("a", "CT", pool) in {"b", "d"}
    assert partner_for("a", "CT", pool) == partner_for("a", "CT", list(reversed(pool)))
    assert partner_for("c", "MRI", pool) is None
    assert partner_for("e", None, pool) == "f"


def test_visual_claims_and_kind_names():
    completion = "<think>This is a CT question. The liver shows a hypodense mass. So A.</think><answer>A</answer>"
    assert [text for _, _, text in visual_claims(completion)] == ["The liver shows a hypodense mass."]
    start, end, text = visual_claims(completion)[0]
    assert completion[start:end] == text
    assert parse_kinds("blank, shuffle,rotate") == (ProbeKind.BLANK, ProbeKind.SHUFFLE, ProbeKind.ROTATE)
    assert parse_kinds(["no-think"]) == (ProbeKind.NO_THINK,)
    with pytest.raises(ValueError, match="Unknown probe 'flip'. Choose from: blank, shuffle, rotate, no_think"):
        parse_kinds("blank,flip")


@pytest.mark.parametrize("looks", [True, False], ids=["looking", "blind"])
def test_tiny_models_taught_to_look_or_not_get_the_verdicts_they_were_taught(looks, request):
    loaded = load_model(request.getfixturevalue("looking_model_dir" if looks else "blind_model_dir"))
    answer = model_answerer(loaded, GenerationSettings(max_new_tokens=40, do_sample=True, temperature=5.0, seed=3))
    completion = answer(BRIGHT, QUESTION, OPTIONS, PromptStyle.MEDVLM)
    probed = ProbeCase(BRIGHT, QUESTION, OPTIONS, completion, partner=DARK, partner_id="dark")
    assert probed.letter == "A"  # both say bright: A) Bright
    summary = summarize(probed.completion, list(run_probes(probed, answer)))
    assert summary.image_invariant is (not looks)
    assert summary.invariant_with_visual_claims is (not looks)
    assert summary.rotation_consistency == (1.0 if looks else 0.0)
    assert summary.changed == {"blank": looks, "shuffle": looks, "rotate shift 1": not looks}


def test_an_answer_that_names_no_option_decides_nothing():
    """A cut-off answer is neither "the same" nor "changed": two of them must not make an output image-invariant."""

    def cut_off(image, question, options, style):
        return "<think>The square is bright, so the answer is"

    probed = case(cut_off)
    assert probed.letter is None
    answers = list(run_probes(probed, cut_off))
    assert [a.changed for a in answers] == [None, None, None]
    summary = summarize(probed.completion, answers)
    assert summary.image_invariant is None and summary.invariant_with_visual_claims is None
    assert summary.rotation_consistency is None
    assert summary.lines() == [
        "No option could be read from the original answer or the probe (blank, shuffle, rotate shift 1): "
        "those probes decide nothing."
    ]
    shown = probes_markdown([ProbeSection(None, probed, answers)])  # the Ask page's probe panel
    assert "- Blank image (black): no option, decides nothing" in shown and "same answer" not in shown

    def blank_cuts_off(image, question, options, style):  # reads the image, but says nothing of a black one
        return (
            cut_off(image, question, options, style)
            if image.getbbox() is None
            else looking(image, question, options, style)
        )

    probed = case(blank_cuts_off)
    answers = list(run_probes(probed, blank_cuts_off))
    assert [(a.kind, a.letter, a.changed) for a in answers] == [
        (ProbeKind.BLANK, None, None),
        (ProbeKind.SHUFFLE, "B", True),
        (ProbeKind.ROTATE, "A", False),
    ]
    summary = summarize(probed.completion, answers)
    assert summary.image_invariant is False and summary.changed["blank"] is None
    sample = ProbedSample("A", probed.letter, tuple(answers), summary)
    rates = probe_rates([sample])
    assert rates["changed"]["blank"] is None and rates["changed"]["shuffle"] == 1.0
    assert rates["accuracy"]["blank"] == 0.0  # no option named is a wrong answer

    # A file written before this rule stored the cut-off blank answer as "changed"; read back, it decides nothing.
    stored = probes_to_dict(sample)
    stored["answers"][0]["changed"] = True
    assert probed_from_dict(stored, "A", probed.letter, probed.completion).answers[0].changed is None


def test_probe_rates_over_samples():
    samples = []
    for answerer, image, truth in [
        (looking, BRIGHT, "A"),
        (looking, DARK, "B"),
        (blind, BRIGHT, "A"),
        (blind, DARK, "B"),
    ]:
        probed = case(answerer, image=image, partner=DARK if image is BRIGHT else BRIGHT)
        answers = tuple(run_probes(probed, answerer))
        samples.append(ProbedSample(truth, probed.letter, answers, summarize(probed.completion, answers)))
    rates = probe_rates(samples)
    assert rates["n"] == 4
    # Looking: right everywhere; blind: right only on the bright square, and wrong when rotated.
    assert rates["accuracy"]["original"] == 0.75
    assert rates["accuracy"]["blank"] == 0.5  # black reads as dark: right for the dark squares only
    assert rates["accuracy"]["shuffle"] == 0.25  # only the blind model on the dark square's partner (bright)
    assert rates["accuracy"]["circular"] == 0.5 and rates["accuracy"]["no_think"] is None
    assert rates["changed"] == {"blank": 0.25, "shuffle": 0.5, "image": 0.5, "no_think": None}
    assert rates["rotation_consistency"] == 0.5 and rates["invariant_with_visual_claims"] == 0.5
    assert probe_rates([])["accuracy"]["original"] is None
