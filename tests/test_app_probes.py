"""Probe and the relevance overlay on the Ask page, through ``gradio_client`` against the launched app
(the model: a tiny checkpoint taught to answer the square task from the pixels), and Stop probing
through the handlers."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import pytest
from PIL import Image

from helpers import answered, ask, client, named, review, running_app, upload
from medvlm.probes import ProbeKind
from medvlm.square_task import OPTIONS, QUESTION, square_image
from medvlm.ui import AppConfig
from medvlm.ui.events import ProbeUpdate, RelevanceShown

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(looking_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    config = AppConfig(model=str(looking_model_dir), data_dir=tmp_path_factory.mktemp("data"))
    with running_app(config) as app:
        yield app


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("squares")
    paths = {}
    for name, bright in (("bright", True), ("dark", False)):
        paths[name] = folder / f"{name}.png"
        square_image(random.Random(4), bright).save(paths[name])
    return paths


def asked(user, path: Path) -> dict:
    upload(user, path)
    return answered(ask(user, QUESTION, list(OPTIONS), max_new_tokens=40))


def probed(user, output_id: str, kinds: list[str] | None = None) -> list[dict]:
    job = user.submit(output_id, *([] if kinds is None else [kinds]), api_name="/probe")
    list(job)  # every streamed update, as it comes
    return [named(update, ProbeUpdate) for update in job.outputs()]


def test_probe_streams_each_probe_stores_it_and_reports_the_image_dependence(app, squares) -> None:
    user = client(app.url)
    first = asked(user, squares["bright"])
    assert "<answer>A</answer>" in first["raw_output"]
    updates = probed(user, first["output_id"])
    final = updates[-1]["probe_results"]
    # No other case is stored yet: blank and rotation only, and the page says why.
    assert "- Blank image (black): B) Dark, **changed**" in final
    assert "- Options rotated (options A) Dark, B) Bright): A) Bright, same answer" in final
    assert "No other stored case of this modality yet" in final
    assert "- Image-dependent: the answer changed with the blank image." in final
    assert len(updates) >= 3 and "more probes are running" in updates[-2]["probe_results"]
    stored = app.workbench.store.probe_answers([first["output_id"]])[first["output_id"]]
    assert [(a.kind, a.letter, a.changed) for a in stored] == [
        (ProbeKind.BLANK, "B", True),
        (ProbeKind.ROTATE, "A", False),
    ]

    # Review a dark square's answer: it is stored, so the next bright square has a partner to swap in.
    dark = asked(user, squares["dark"])
    assert review(user, dark, ["superficial"]).startswith("Saved your review")
    second = asked(user, squares["bright"])
    final = probed(user, second["output_id"])[-1]["probe_results"]
    assert "- Another case's image (" in final and final.count("**changed**") == 2
    stored = app.workbench.store.probe_answers([second["output_id"]])[second["output_id"]]
    shuffled = [a for a in stored if a.kind is ProbeKind.SHUFFLE]
    assert len(shuffled) == 1 and shuffled[0].letter == "B" and shuffled[0].changed


def test_the_probes_ticked_are_the_ones_run_the_no_reasoning_one_included(app, squares) -> None:
    """The page's probe choices reach the run: the blank image and the answer without reasoning, nothing else;
    none ticked is refused with a sentence and stores nothing."""
    user = client(app.url)
    shown = asked(user, squares["bright"])
    final = probed(user, shown["output_id"], ["blank", "no_think"])[-1]["probe_results"]
    assert "- Without reasoning (no think): " in final and "Options rotated" not in final
    # the tiny model answers only in the <think> format it was taught: asked without it, it names no option,
    # which decides nothing (not "the answer changes")
    assert "- Without reasoning (no think): no option, decides nothing" in final
    assert "the probe (no think): those probes decide nothing" in final and "Without reasoning the answer" not in final
    stored = app.workbench.store.probe_answers([shown["output_id"]])[shown["output_id"]]
    assert [a.kind for a in stored] == [ProbeKind.BLANK, ProbeKind.NO_THINK]
    again = asked(user, squares["dark"])
    assert "Choose at least one probe" in probed(user, again["output_id"], [])[-1]["probe_results"]
    assert app.workbench.store.probe_answers([again["output_id"]]) == {}


def test_a_probe_of_an_answer_no_longer_on_screen_is_refused(app, squares) -> None:
    user = client(app.url)
    earlier = asked(user, squares["bright"])
    asked(user, squares["dark"])
    final = probed(user, earlier["output_id"])[-1]
    assert "That answer is no longer on screen" in final["probe_results"]
    assert app.workbench.store.probe_answers([earlier["output_id"]]) == {}
    fresh = client(app.url)
    assert "Ask a question first" in probed(fresh, "")[-1]["probe_results"]


def test_selecting_a_sentence_draws_its_map_over_the_image_and_clearing_it_removes_it(app, squares) -> None:
    user = client(app.url)
    shown = asked(user, squares["bright"])
    assert "square is bright" in shown["reasoning"]
    result = named(user.predict("0", api_name="/relevance"), RelevanceShown)
    overlay = result["viewer"]["overlay"]
    with Image.open(io.BytesIO(base64.b64decode(overlay.split(",", 1)[1]))) as layer:
        assert layer.mode == "RGBA" and layer.size == (2, 2)  # 56 px: 2 x 2 blocks of 28
        lowest, highest = layer.getchannel("A").getextrema()
    assert highest > 0 and layer.getpixel((0, 0))[:3] == (255, 64, 0)
    assert "2\u00d72 blocks" in result["relevance_status"] and "The square is bright." in result["relevance_status"]
    assert result["viewer"]["readout"].endswith("map: sentence 1")
    cleared = named(user.predict("", api_name="/relevance"), RelevanceShown)
    assert "overlay" not in cleared["viewer"] and cleared["relevance_status"] == ""


def test_stop_probing_ends_after_the_current_probe_and_keeps_what_finished(tmp_path: Path, looking_model_dir) -> None:
    """Through the handlers: Stop probing pressed while the first probe runs; that one is stored, no other runs."""
    import dataclasses
    import threading
    import types

    from helpers import model_output
    from medvlm.annotations import AnnotationStore
    from medvlm.model import load_model
    from medvlm.streaming import answer_batch
    from medvlm.ui.ask.probe_handlers import ProbeHandlers
    from medvlm.ui.session import Session

    loaded = load_model(looking_model_dir)
    image = square_image(random.Random(4), True)
    output = model_output(
        image=image,
        question=QUESTION,
        options=list(OPTIONS),
        completion="<think> The square is bright. </think>\n<answer>A</answer>",
        settings={**model_output().settings, "max_new_tokens": 40},
    )
    asked, release = [], threading.Event()

    def slow_batch(*args, **kwargs):
        asked.append(args[3])
        release.wait(30)  # the first probe is "running" until Stop has been pressed
        return answer_batch(*args, **kwargs)

    workbench = types.SimpleNamespace(
        store=AnnotationStore(tmp_path), answer_batch=slow_batch, model_name=lambda model: "looking"
    )
    session = Session(last_output=output, answered_by=loaded)
    probes = ProbeHandlers(workbench)
    stream = probes.probe(session, output.output_id)
    assert "The first probe is running" in next(stream).probe_results
    result: list = []
    worker = threading.Thread(target=lambda: result.extend(stream))
    worker.start()
    while not asked:
        threading.Event().wait(0.01)
    stopped = probes.stop_probing(session)
    release.set()
    worker.join(30)
    assert stopped.probe_button["interactive"] is True
    assert len(asked) == 1  # the blank probe finished; the rotation was never asked
    assert "Stopped by you; the probes that finished are stored." in result[-1].probe_results
    stored = workbench.store.probe_answers([output.output_id])[output.output_id]
    assert [(a.kind, a.changed) for a in stored] == [(ProbeKind.BLANK, True)]
    assert session.probing is None
    assert dataclasses.replace(output) == session.last_output  # the answer on screen is untouched


def test_an_administrator_makes_a_probed_campaign_and_reviewers_see_the_evidence(
    blind_model_dir: Path, tmp_path: Path
) -> None:
    """The set-up panel through ``gradio_client``: a dataset answered and probed by the served model (a tiny one
    that never looks), the verdicts shown beside the hints, measured in the report against the reviews."""
    from gradio_client import handle_file

    from medvlm.annotations import AnnotationStore
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.square_task import write_square_task
    from medvlm.ui.events import CampaignShown

    questions = write_square_task(tmp_path / "task", 4, seed=2, modalities=("CT",))
    upload = [
        handle_file(str(questions)),
        *(handle_file(str(path)) for path in sorted((tmp_path / "task" / "images").iterdir())),
    ]
    config = AppConfig(model=str(blind_model_dir), data_dir=tmp_path / "data", users=(("alice", "pw"),))
    with running_app(config) as app:
        admin = client(app.url, auth=("alice", "pw"))
        _, status = admin.predict(
            upload,
            "Probed",
            1,
            "",
            False,
            "dataset",
            None,
            False,
            ["blank", "shuffle", "rotate"],
            True,
            api_name="/campaign_create",
        )
        assert "all 4 questions answered and probed (blank, shuffle, rotate)" in status, status
        generation = Campaigns(AnnotationStore(tmp_path / "data")).generation("Probed")
        assert generation.probed == 4 and generation.show_probes
        shown = named(admin.predict("Probed", "", api_name="/campaign_start"), CampaignShown)
        reviewed = 0
        while shown["campaign_output_id"]:
            assert "**Probes** (the model asked again; evidence, not a flag)" in shown["campaign_hints"]
            assert "Image-invariant with visual claims" in shown["campaign_hints"]
            flags = ["superficial"] if reviewed % 2 == 0 else ["sound"]
            shown = named(
                admin.predict(flags, "", "alice", shown["campaign_output_id"], api_name="/campaign_submit"),
                CampaignShown,
            )
            reviewed += 1
        assert reviewed == 4
        _, _, hints, _ = admin.predict("Probed", api_name="/campaign_report")
        rows = {row[0]: dict(zip(hints["headers"], row, strict=True)) for row in hints["data"]}
        probe_row = rows["probe: image-invariant with visual claims"]
        assert (probe_row["fired"], probe_row["both"], probe_row["precision"], probe_row["recall"]) == (
            4,
            2,
            "0.50",
            "1.00",
        )


def test_a_selected_sentences_map_stays_over_the_image_when_the_window_changes(
    looking_model_dir: Path, tmp_path: Path
) -> None:
    """Through the handlers: a CT answered, a sentence's map shown, the window dragged: the map is still drawn;
    a new answer removes it."""
    from pydicom.data import get_testdata_file

    from helpers import Page
    from medvlm.ui import Workbench
    from medvlm.ui.ask.probe_handlers import ProbeHandlers
    from medvlm.ui.session import Session

    bench = Page(Workbench.start(AppConfig(model=str(looking_model_dir), data_dir=tmp_path / "data")))
    session = Session()
    bench.load_file(session, get_testdata_file("CT_small.dcm"))
    list(bench.ask(session, QUESTION, "\n".join(OPTIONS), max_new_tokens=40))
    assert session.last_output is not None and session.image.metadata.window_width is not None
    shown = ProbeHandlers(bench.workbench).show_relevance(session, "0")
    assert "overlay" in shown.viewer
    metadata = session.image.metadata
    dragged = {**shown.viewer, "center": metadata.window_center + 40, "width": metadata.window_width + 100}
    rendered = bench.view(session, dragged)
    assert rendered.viewer["overlay"] == shown.viewer["overlay"]
    assert rendered.viewer["readout"].endswith("map: sentence 1") and "W " in rendered.viewer["readout"]
    list(bench.ask(session, QUESTION, "\n".join(OPTIONS), max_new_tokens=40))
    assert "overlay" not in bench.view(session, {**dragged, "width": metadata.window_width + 200}).viewer
