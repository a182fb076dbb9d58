"""The two-model Ask page (``--compare-model``): both answers side by side, each reviewed on its own, and a
blind pairwise verdict stored in terms of outputs and revealed once saved. The handlers are called as the
page calls them; then the launched app is driven through ``gradio_client``.
"""

from __future__ import annotations

import threading
import types
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from helpers import Page, client, named, running_app, upload
from medvlm import memory
from medvlm.streaming import interleave
from medvlm.ui import AppConfig, Workbench, build_demo, render
from medvlm.ui.ask.probe_handlers import ProbeHandlers
from medvlm.ui.config import COMPARE_MODEL_ENV
from medvlm.ui.events import AskUpdate, ProbeUpdate, VerdictSaved
from medvlm.ui.session import Session

QUESTION = "Which imaging modality was used?"
OPTIONS = "CT\nMRI\nX-Ray\nUltrasound"


@pytest.fixture(scope="module")
def pair_page(formatted_model_dir: Path, second_formatted_model_dir: Path, tmp_path_factory) -> Page:
    config = AppConfig(
        model=str(formatted_model_dir),
        compare_model=str(second_formatted_model_dir),
        data_dir=tmp_path_factory.mktemp("pair-data"),
    )
    workbench = Workbench.start(config)
    yield Page(workbench)
    workbench.close()


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "scan.png"
    Image.radial_gradient("L").resize((96, 80)).save(path)
    return path


def asked(page: Page, session: Session, *, blind: bool = True, **settings) -> list:
    settings.setdefault("max_new_tokens", 32)
    return list(page.ask(session, QUESTION, OPTIONS, blind=blind, **settings))


def changed(update, field: str) -> bool:
    return getattr(update, field) is not gr.skip() and getattr(update, field) != gr.skip()


def test_the_flag_and_the_variable_name_the_second_model() -> None:
    assert AppConfig.from_args(["--compare-model", "base/model"], env={}).compare_model == "base/model"
    assert AppConfig.from_args([], env={COMPARE_MODEL_ENV: " run/checkpoint "}).compare_model == "run/checkpoint"
    assert AppConfig.from_args([], env={}).compare_model is None


def test_on_a_cpu_the_second_answer_streams_after_the_first_each_in_its_column(pair_page: Page, png: Path) -> None:
    session = Session()
    pair_page.load_file(session, str(png))
    updates = asked(pair_page, session, blind=False)
    first = updates[0]
    assert first.timing == "Generating..." and first.second_timing == render.WAITING_FOR_FIRST
    assert first.ask_button["interactive"] is False and first.verdict_panel["visible"] is False
    # Every streamed update fills one column; all of the first's come before any of the second's.
    columns = [
        "first" if changed(update, "reasoning") else "second"
        for update in updates[1:-1]
        if changed(update, "reasoning") or changed(update, "second_reasoning")
    ]
    assert columns and "second" in columns and columns == sorted(columns, key=["first", "second"].index)
    # When the first is finished it is shown highlighted while the second still answers.
    handover = next(update for update in updates if changed(update, "timing") and "tokens/s" in update.timing)
    assert 'class="option chosen' in handover.answer and handover.second_timing == "Generating..."
    final = updates[-1]
    left, right = session.last_output, session.second_output
    assert (final.output_id, final.second_output_id) == (left.output_id, right.output_id)
    assert left.model["model"] == pair_page.workbench.config.model  # not blind: the first model on the left
    assert right.model["model"] == pair_page.workbench.config.compare_model
    for answer, output in ((final.answer, left), (final.second_answer, right)):
        assert f'class="option chosen" data-letter="{output.letter}"' in answer
    assert "tokens/s" in final.timing and "tokens/s" in final.second_timing
    assert final.first_header == f"### Answer 1: {left.model['model']}"  # not blind: named at once
    assert final.verdict_panel["visible"] and final.review_panel["visible"] and final.second_review_panel["visible"]


def test_a_blind_pair_hides_the_models_until_the_verdict_and_stores_it_by_output(
    pair_page: Page, png: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workbench = pair_page.workbench
    monkeypatch.setattr("medvlm.ui.ask.answer_handlers.secrets.randbelow", lambda n: 1)  # the draw: swap the sides
    session = Session()
    pair_page.load_file(session, str(png))
    final = asked(pair_page, session)[-1]
    left, right = session.last_output, session.second_output
    assert left.model["model"] == workbench.config.compare_model and right.model["model"] == workbench.config.model
    assert (final.first_header, final.second_header) == ("### Answer 1", "### Answer 2")
    assert workbench.config.model not in final.review_target + final.second_review_target

    # Each answer has its own review, saved against its own output.
    assert "Saved your review" in pair_page.submit_review(session, ["sound"], "", None, "Dr Pair", left.output_id)
    assert "Saved your review" in pair_page.submit_second_review(
        session, ["superficial"], "", None, "Dr Pair", right.output_id
    )
    reviews = {review.output_id: review.flags for review in workbench.store.query(reviewer="Dr Pair")}
    assert reviews == {left.output_id: ("sound",), right.output_id: ("superficial",)}
    # The second form cannot save against the first answer (or anything not on screen).
    refused = pair_page.submit_second_review(session, ["sound"], "", None, "Dr Pair", left.output_id)
    assert "not saved: the answer it is for is no longer on screen" in refused

    mirrored = []  # the Hub sync, when on, gets the verdict with both answers
    hub = types.SimpleNamespace(record_verdict=lambda *args: mirrored.append(args))
    monkeypatch.setattr(workbench, "hub_sync", hub)
    saved = pair_page.save_verdict(session, "first", "Dr Pair", left.output_id, right.output_id)
    assert isinstance(saved, VerdictSaved) and saved.verdict_status.startswith("Saved your verdict (#")
    assert [(v.preferred, first.output_id, second.output_id, campaign) for v, first, second, campaign in mirrored] == [
        (left.output_id, left.output_id, right.output_id, None)
    ]
    assert saved.first_header == f"### Answer 1: {workbench.config.compare_model}"
    assert saved.second_header == f"### Answer 2: {workbench.config.model}"
    (verdict,) = workbench.store.verdicts([left.output_id])
    assert verdict.preferred == left.output_id and verdict.shown_first == left.output_id and verdict.blind
    assert workbench.store.output(verdict.preferred).model["model"] == workbench.config.compare_model
    changed_mind = pair_page.save_verdict(session, "both_poor", "Dr Pair", left.output_id, right.output_id)
    assert changed_mind.verdict_status.startswith("Changed your verdict")
    assert [v.outcome for v in workbench.store.verdicts([left.output_id])] == ["both_poor"]


def test_probe_reasks_both_answers_of_a_pair_each_with_the_model_that_gave_it(
    pair_page: Page, png: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Did training make the model look? In a comparison *Probe* probes both columns, each answer with its own
    model, in sections titled like the columns, so a blind pair stays blind."""
    workbench = pair_page.workbench
    monkeypatch.setattr("medvlm.ui.ask.answer_handlers.secrets.randbelow", lambda n: 1)  # the compare model first
    session = Session()
    pair_page.load_file(session, str(png))
    asked(pair_page, session)
    left, right = session.last_output, session.second_output
    updates = list(ProbeHandlers(workbench).probe(session, left.output_id, ["blank", "rotate"]))
    assert "**Answer 1**" in updates[0].probe_results and "Not probed yet." in updates[0].probe_results
    shown = updates[-1].probe_results
    first, second = shown.split("**Answer 2**")
    assert "**Answer 1**" in first and first.count("Blank image (black)") == second.count("Blank image (black)") == 1
    assert first.count("**What they show**") == second.count("**What they show**") == 1
    assert workbench.config.model not in shown and workbench.config.compare_model not in shown  # still blind
    with workbench.store.connection() as conn:
        probed_by = dict(conn.execute("SELECT DISTINCT output_id, probed_by FROM probe_answers").fetchall())
    assert probed_by == {left.output_id: workbench.config.compare_model, right.output_id: workbench.config.model}
    stored = workbench.store.probe_answers([left.output_id, right.output_id])
    assert [a.kind.value for a in stored[left.output_id]] == [a.kind.value for a in stored[right.output_id]]
    assert {a.variant for a in stored[right.output_id]} == {"black", "shift 1", "shift 2", "shift 3"}


def test_a_verdict_is_refused_while_answering_without_a_choice_or_for_another_pair(pair_page: Page, png: Path) -> None:
    session = Session()
    pair_page.load_file(session, str(png))
    assert "no answer to review yet" in pair_page.save_verdict(session, "tie", "Dr P", "", "").verdict_status
    stream = iter(pair_page.ask(session, QUESTION, OPTIONS, max_new_tokens=32))
    next(stream)
    assert "still being generated" in pair_page.save_verdict(session, "tie", "Dr P", "a", "b").verdict_status
    list(stream)
    left, right = session.last_output.output_id, session.second_output.output_id
    assert "Choose a verdict" in pair_page.save_verdict(session, None, "Dr P", left, right).verdict_status
    old_pair = (left, right)
    asked(pair_page, session)  # asked again: a new pair is on screen
    refused = pair_page.save_verdict(session, "tie", "Dr P", *old_pair)
    assert "no longer on screen" in refused.verdict_status and refused.first_header == gr.skip()
    assert pair_page.workbench.store.verdicts(list(old_pair)) == []


def test_a_new_case_empties_both_answers_and_closes_the_verdict(pair_page: Page, png: Path) -> None:
    session = Session()
    pair_page.load_file(session, str(png))
    asked(pair_page, session)
    shown = pair_page.load_file(session, str(png))
    assert session.second_output is None and session.pair_names is None
    assert shown.second_reasoning == "" and shown.second_output_id == "" and shown.verdict_panel["visible"] is False
    assert shown.second_review_panel["visible"] is False and shown.first_header == "### Answer 1"


def test_stop_stops_both(pair_page: Page, png: Path) -> None:
    session = Session()
    pair_page.load_file(session, str(png))
    stream = iter(pair_page.ask(session, QUESTION, OPTIONS, max_new_tokens=400))
    next(stream)
    stopped = pair_page.stop(session)
    assert stopped.second_timing == "Stopped by you." and render.STOPPED in stopped.second_answer
    rest = list(stream)
    assert render.STOPPED in rest[-1].answer and session.last_output is None and session.second_output is None


def test_interleave_passes_both_streams_on_as_they_come_and_stops_them_when_closed() -> None:
    stop = threading.Event()
    first_done = threading.Event()

    def first():
        yield "a1"
        first_done.set()
        yield "a2"

    def second():
        first_done.wait(5)  # the second's item arrives while the first is still running
        yield "b1"
        while not stop.is_set():  # a generation that only ends when told to
            stop.wait(0.01)
        yield "b-stopped"

    merged = interleave([first(), second()], stop)
    seen = [next(merged) for _ in range(3)]
    assert sorted(seen) == [(0, "a1"), (0, "a2"), (1, "b1")]
    merged.close()  # the consumer went away: the other stream was told to stop, and its thread has ended
    assert stop.is_set() and not [thread for thread in threading.enumerate() if thread.name == "medvlm-interleave"]

    def broken():
        yield "x"
        raise RuntimeError("generation failed")

    with pytest.raises(RuntimeError, match="generation failed"):
        list(interleave([broken(), iter(["y"])], threading.Event()))


def test_a_second_model_that_does_not_fit_is_refused_at_start_in_words(
    formatted_model_dir: Path,
    second_formatted_model_dir: Path,
    tmp_path: Path,
    png: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "memory_limit_bytes", lambda device="cpu": 64 * 2**20)  # a 64 MiB machine
    config = AppConfig(
        model=str(formatted_model_dir), compare_model=str(second_formatted_model_dir), data_dir=tmp_path
    )
    workbench = Workbench.start(config)
    try:
        assert workbench.compare is None and workbench.model is not None  # the first model still answers
        (notice,) = workbench.notices
        assert notice.startswith(f"The comparison model {second_formatted_model_dir} was not loaded")
        assert "this machine allows 0.1 GiB" in notice and notice in workbench.banner()
        session = Session()
        Page(workbench).load_file(session, str(png))
        final = list(Page(workbench).ask(session, QUESTION, OPTIONS, max_new_tokens=16))[-1]
        assert final.output_id and session.second_output is None and final.second_answer == gr.skip()
        blocks = build_demo(workbench).blocks.values()
        second_panel = next(block for block in blocks if getattr(block, "elem_id", None) == "second-output-panel")
        assert second_panel.visible is False
    finally:
        workbench.close()


def test_the_estimate_counts_the_first_model_as_loaded_and_its_copy() -> None:
    import torch

    layer = torch.nn.Linear(256, 256)  # 65,792 fp32 numbers
    check = memory.check_two_models(layer, loaded_bytes=0, baseline_bytes=1000)
    assert memory.weight_bytes(layer) == 257 * 256 * 4
    assert check.needed_bytes == round(1000 + 2 * 257 * 256 * 4 * memory.PEAK_OVER_MODELS)
    bigger = memory.check_two_models(layer, loaded_bytes=10 * 2**20)  # loading added more than the state dict
    assert bigger.needed_bytes == round(2 * 10 * 2**20 * memory.PEAK_OVER_MODELS)
    assert memory.MemoryCheck(needed_bytes=9, limit_bytes=10).fits
    assert not memory.MemoryCheck(needed_bytes=10, limit_bytes=10).fits  # 10% is kept free
    assert memory.MemoryCheck(needed_bytes=10**12, limit_bytes=None).fits  # unknown: let it try


@pytest.mark.slow
def test_the_launched_app_streams_two_answers_and_stores_a_blind_verdict(
    formatted_model_dir: Path, second_formatted_model_dir: Path, tmp_path: Path, png: Path
) -> None:
    config = AppConfig(
        model=str(formatted_model_dir), compare_model=str(second_formatted_model_dir), data_dir=tmp_path
    )
    with running_app(config) as app:
        user = client(app.url)
        upload(user, png)
        job = user.submit(question=QUESTION, options=OPTIONS, max_new_tokens=32, blind=True, api_name="/ask")
        job.result()
        updates = [named(update, AskUpdate) for update in job.outputs()]
        final = updates[-1]
        assert any(update["reasoning"] for update in updates[1:-1])  # both columns streamed, piece by piece
        assert any(update["second_reasoning"] for update in updates[1:-1])
        assert 'class="option chosen' in final["answer"] and 'class="option chosen' in final["second_answer"]
        assert (final["first_header"], final["second_header"]) == ("### Answer 1", "### Answer 2")
        left_id, right_id = final["output_id"], final["second_output_id"]
        assert len(left_id) == len(right_id) == 32 and left_id != right_id
        probe = user.submit(left_id, ["blank"], api_name="/probe")  # both columns, before the verdict
        probe.result()
        probed = named(probe.outputs()[-1], ProbeUpdate)["probe_results"]
        assert "**Answer 1**" in probed and "**Answer 2**" in probed and probed.count("Blank image (black)") == 2
        assert set(app.workbench.store.probe_answers([left_id, right_id])) == {left_id, right_id}

        status, first_header, second_header = user.predict(
            verdict="second",
            reviewer_name="Dr Client",
            output_id=left_id,
            second_output_id=right_id,
            api_name="/save_verdict",
        )
        assert status.startswith("Saved your verdict") and "answer 2 from" in status
        store = app.workbench.store
        (verdict,) = store.verdicts([left_id])
        assert (verdict.preferred, verdict.shown_first, verdict.reviewer) == (right_id, left_id, "Dr Client")
        revealed_right = store.output(right_id).model["model"]
        assert second_header == f"### Answer 2: {revealed_right}" and revealed_right in status
        assert {revealed_right, store.output(left_id).model["model"]} == {config.model, config.compare_model}
        assert first_header == f"### Answer 1: {store.output(left_id).model['model']}"
        review = user.predict(["sound"], "", None, "Dr Client", right_id, api_name="/submit_second_review")
        assert review.startswith("Saved your review") and store.query(reviewer="Dr Client")[0].output_id == right_id


def test_sides_are_drawn_per_question(pair_page: Page, png: Path) -> None:
    """Over 12 blind questions both sides come up (a fair draw fails this once in 2,048 runs)."""
    session = Session()
    pair_page.load_file(session, str(png))
    lefts = set()
    for _ in range(12):
        asked(pair_page, session, max_new_tokens=2)
        lefts.add(session.last_output.model["model"])
    assert lefts == {pair_page.workbench.config.model, pair_page.workbench.config.compare_model}
