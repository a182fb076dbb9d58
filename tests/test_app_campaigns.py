"""Review campaigns through the launched app (``gradio_client``), as a team of reviewers works one."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, client, free_port, model_output, named, running_app
from medvlm.annotations import AnnotationStore
from medvlm.annotations.campaigns import Campaigns
from medvlm.annotations.comparison_campaigns import ComparisonCampaigns
from medvlm.ui import AppConfig
from medvlm.ui.events import CampaignShown

pytestmark = pytest.mark.slow

CONTRADICTING = "<think>The scan shows lobes full of air: this is the brain.</think><answer>B</answer>"


def campaign_outputs(count: int) -> list:
    return [
        model_output(
            index,
            completion=CONTRADICTING if index == 0 else model_output(index).completion,
            question_type=("Disease Diagnosis", "Anatomy Identification")[index % 2],
        )
        for index in range(count)
    ]


def review_until_done(url: str, reviewer: str, flags=("sound",)) -> list[str]:
    """One reviewer's loop through the API: Start, then Submit & next until nothing is left."""
    user = client(url)
    shown = named(user.predict("Team round", reviewer, api_name="/campaign_start"), CampaignShown)
    reviewed = []
    while shown["campaign_output_id"]:
        reviewed.append(shown["campaign_output_id"])
        shown = named(
            user.predict(list(flags), "", reviewer, shown["campaign_output_id"], api_name="/campaign_submit"),
            CampaignShown,
        )
        assert "Saved your review" in shown["campaign_status"], shown["campaign_status"]
    assert "Nothing is left for you" in shown["campaign_case"]
    return reviewed


def per_output(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT output_id, reviewer FROM annotations").fetchall()
    found: dict[str, list[str]] = {}
    for output_id, reviewer in rows:
        found.setdefault(output_id, []).append(reviewer)
    return found


def test_eight_reviewers_at_once_leave_every_output_with_exactly_k(formatted_model_dir: Path, tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    Campaigns(store).create("Team round", campaign_outputs(12), reviews_per_output=3, created_by="admin")
    with running_app(AppConfig(model=str(formatted_model_dir), data_dir=tmp_path, concurrency=4)) as app:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            done = list(pool.map(lambda index: review_until_done(app.url, f"Reviewer {index}"), range(8)))
    counts = per_output(store.db_path)
    assert len(counts) == 12 and all(len(names) == 3 == len(set(names)) for names in counts.values()), counts
    assert sum(map(len, done)) == 36 and all(len(set(ids)) == len(ids) for ids in done)


def test_the_hint_the_blind_switch_and_a_skip_reach_the_reviewer(formatted_model_dir: Path, tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    Campaigns(store).create("Team round", campaign_outputs(2), reviews_per_output=1, blind=True, created_by="admin")
    with running_app(AppConfig(model=str(formatted_model_dir), data_dir=tmp_path)) as app:
        user = client(app.url)
        assert (
            "no campaign called"
            in named(user.predict("Nope", "Dr H", api_name="/campaign_start"), CampaignShown)["campaign_status"]
        )
        shown = named(user.predict("Team round", "Dr H", api_name="/campaign_start"), CampaignShown)
        assert "Possible **reasoning contradicts the answer**" in shown["campaign_hints"]
        assert "hidden (blind campaign)" in shown["campaign_case"] and "JZPeterPan" not in repr(shown)
        assert "Correct answer" not in shown["campaign_answer"]  # blind: the correct answer is not shown
        refused = named(
            user.predict("  ", "Dr H", shown["campaign_output_id"], api_name="/campaign_skip"), CampaignShown
        )
        assert "Say why you skip" in refused["campaign_status"]
        skipped = named(
            user.predict("image unreadable", "Dr H", shown["campaign_output_id"], api_name="/campaign_skip"),
            CampaignShown,
        )
        assert (
            skipped["campaign_output_id"] not in ("", shown["campaign_output_id"])
            and "Skipped" in skipped["campaign_status"]
        )


def launch_app(model: Path, data: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "app.py", "--model", str(model), "--data-dir", str(data), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return process
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "app.py did not start"
            time.sleep(0.5)


def test_a_killed_app_loses_no_submitted_review_and_the_campaign_resumes(
    formatted_model_dir: Path, tmp_path: Path
) -> None:
    store = AnnotationStore(tmp_path)
    Campaigns(store).create("Team round", campaign_outputs(4), reviews_per_output=2, created_by="admin")
    port = free_port()
    process = launch_app(formatted_model_dir, tmp_path, port)
    url = f"http://127.0.0.1:{port}/"
    user = client(url)
    shown = named(user.predict("Team round", "Dr Before", api_name="/campaign_start"), CampaignShown)
    for _ in range(3):
        shown = named(
            user.predict(["sound"], "", "Dr Before", shown["campaign_output_id"], api_name="/campaign_submit"),
            CampaignShown,
        )
    before = per_output(store.db_path)
    os.kill(process.pid, signal.SIGKILL)  # no shutdown, no flush: what a crash or an OOM kill does
    process.wait(timeout=30)
    assert sum(map(len, before.values())) == 3

    port = free_port()
    process = launch_app(formatted_model_dir, tmp_path, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        review_until_done(url, "Dr Before")  # the one output they still held comes back to them
        review_until_done(url, "Dr After")
    finally:
        process.terminate()
        process.wait(timeout=30)
    after = per_output(store.db_path)
    assert all(set(before[output]) <= set(after[output]) for output in before)  # nothing submitted was lost
    assert len(after) == 4 and all(sorted(names) == ["Dr After", "Dr Before"] for names in after.values()), after


def test_the_campaign_report_counts_reviewers_agreement_and_hint_accuracy(
    formatted_model_dir: Path, tmp_path: Path
) -> None:
    store = AnnotationStore(tmp_path)
    Campaigns(store).create("Team round", campaign_outputs(2), reviews_per_output=2, created_by="admin")
    with running_app(AppConfig(model=str(formatted_model_dir), data_dir=tmp_path)) as app:
        review_until_done(app.url, "Dr One", flags=("contradiction",))
        review_until_done(app.url, "Dr Two", flags=("sound",))
        summary, agreement, hints, split = client(app.url).predict("Team round", api_name="/campaign_report")
        plots = client(app.url).predict("Team round", api_name="/campaign_dashboard")
        over_time, by_modality, by_question_type, by_model, per_reviewer = map(plotted, plots)
    assert "2 of 2 outputs complete, 4 of 4 reviews" in summary and "Dr One 2" in summary and "Dr Two 2" in summary
    rows = {row[0]: dict(zip(agreement["headers"], row, strict=True)) for row in agreement["data"]}
    row = rows["Reasoning contradicts the answer"]
    assert row["Outputs reviewed by 2+ people"] == 2 and row["Observed agreement"] == "0.00"
    assert "too few outputs" in row["95% interval of kappa"]  # 2 outputs: no interval
    hint_rows = {row[0]: dict(zip(hints["headers"], row, strict=True)) for row in hints["data"]}
    assert hint_rows["contradiction"]["fired"] == 2 and hint_rows["contradiction"]["precision"] == "0.50"
    assert over_time["columns"] == ["time", "reviews"] and over_time["data"][-1][-1] == 4  # cumulative
    rates = {(row[0], row[1]): row[-1] for row in by_question_type["data"]}  # (type, flag) -> share of reviews
    assert by_question_type["columns"][:2] == ["question_type", "flag"]
    assert rates[("Disease Diagnosis", "contradiction")] == 0.5 and rates[("Anatomy Identification", "sound")] == 0.5
    assert {row[0]: row[1] for row in per_reviewer["data"]} == {"Dr One": 2, "Dr Two": 2}
    assert plots[-1]["y_lim"] == [0, 2] and plots[0]["title"] == "Reviews submitted so far"
    disagreed = [dict(zip(split["headers"], row, strict=True)) for row in split["data"]]
    assert [row["output"] for row in disagreed] == [1, 2] and "Sound reasoning 1/2" in disagreed[0]["split votes"]


def test_administrators_create_a_campaign_from_an_uploaded_run_and_edit_its_guidelines(
    formatted_model_dir: Path, tmp_path: Path
) -> None:
    from gradio_client import handle_file
    from PIL import Image

    from helpers import samples_file

    Image.radial_gradient("L").resize((64, 64)).save(tmp_path / "scan.png")
    samples = samples_file(tmp_path, ["images/scan.png"] * 2, questions=["First?", "Second?"])
    upload = [handle_file(str(samples)), handle_file(str(tmp_path / "scan.png"))]
    config = AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", users=(("alice", "pw"),))
    with running_app(config) as app:
        admin = client(app.url, auth=("alice", "pw"))
        choices, status = admin.predict(
            upload, "Round from the UI", 2, "Be **strict**.", True, api_name="/campaign_create"
        )
        assert "Created campaign Round from the UI: 2 outputs, 2 review(s) each." in status
        campaign = Campaigns(AnnotationStore(tmp_path / "data")).get("Round from the UI")
        assert (campaign.reviews_per_output, campaign.blind, campaign.created_by) == (2, True, "alice")
        guidelines, status = admin.predict("Round from the UI", "Be **kind**.", api_name="/campaign_guidelines")
        assert guidelines == "Be **kind**." and status == "Guidelines saved."
        status = admin.predict("Round from the UI", 2, ["superficial"], "short", api_name="/campaign_adjudicate")
        assert status.startswith("Adjudicated output 2")
        assert "1 to 2" in admin.predict("Round from the UI", 9, ["sound"], "", api_name="/campaign_adjudicate")
        decided = Campaigns(AnnotationStore(tmp_path / "data")).adjudications("Round from the UI")
        assert list(decided.values()) == [("superficial",)]
    with running_app(AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data")) as app:  # name mode
        _, status = client(app.url).predict(upload, "Sneaky", 1, "", False, api_name="/campaign_create")
        assert "Only an administrator can create a campaign here" in status
        refused = client(app.url).predict("Round from the UI", 1, ["sound"], "", api_name="/campaign_adjudicate")
        assert "Only an administrator can adjudicate" in refused
    assert [known.name for known in Campaigns(AnnotationStore(tmp_path / "data")).all()] == ["Round from the UI"]


def test_a_create_refused_for_a_taken_name_works_again_with_the_same_uploads(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The administrator fixes the name and presses Create again: the files uploaded for the first try are read."""
    import shutil
    import types

    from PIL import Image

    from helpers import samples_file
    from medvlm.ui import Workbench
    from medvlm.ui.campaigns.admin_handlers import CampaignAdmin

    Image.radial_gradient("L").resize((64, 64)).save(tmp_path / "scan.png")
    samples = samples_file(tmp_path, ["scan.png"] * 2, questions=["First?", "Second?"])
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))  # where Gradio keeps its upload copies
    uploads = tmp_path / "gradio-cache" / "upload-1"
    uploads.mkdir(parents=True)
    paths = [shutil.copy(path, uploads) for path in (samples, tmp_path / "scan.png")]
    config = AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", users=(("alice", "pw"),))
    workbench = Workbench.start(config)
    try:
        Campaigns(workbench.store).create("Taken", campaign_outputs(1), reviews_per_output=1, created_by="bob")
        handlers = CampaignAdmin(workbench, Campaigns(workbench.store))
        alice = types.SimpleNamespace(username="alice")
        _, refused = handlers.create_campaign(paths, "Taken", 2, "", False, "run", request=alice)
        assert "already" in refused and all(Path(path).exists() for path in paths)
        choices, created = handlers.create_campaign(paths, "Fixed name", 2, "", False, "run", request=alice)
        assert created == "Created campaign Fixed name: 2 outputs, 2 review(s) each.", created
        assert choices["value"] == "Fixed name" and not any(Path(path).exists() for path in paths)
        _, sneaky = handlers.create_campaign(paths[:1], "Sneaky", 1, "", False, "run", request=None)
        assert "Only an administrator" in sneaky
    finally:
        workbench.close()


def test_administrators_download_a_campaign_as_a_dataset_and_push_it_to_the_hub(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's export: a zip that datasets.load_dataset reads, and a push with the server's token only."""
    import zipfile

    import datasets
    import huggingface_hub

    from medvlm.annotations import Review, Span

    campaigns = Campaigns(AnnotationStore(tmp_path / "data"))
    campaigns.create("Team round", campaign_outputs(2), reviews_per_output=2, blind=True, created_by="alice")
    for reviewer, flags in (("Dr One", ("contradiction",)), ("Dr Two", ("sound",))):
        while (assignment := campaigns.next_output("Team round", reviewer)) is not None:
            review = Review(reviewer, flags, "", spans=(Span(7, 12, "irrelevant"),))
            campaigns.submit("Team round", reviewer, assignment.output.output_id, review)
    calls = []

    class FakeHub:  # the network stops here; huggingface_hub's own token lookup does not
        def __init__(self, token=None):
            calls.append(("token", huggingface_hub.get_token()))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs["repo_type"], kwargs["private"]))

        def upload_folder(self, folder_path, repo_id, **kwargs):
            files = sorted(str(path.relative_to(folder_path)) for path in Path(folder_path).rglob("*.*"))
            calls.append(("upload", repo_id, files))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-login"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    config = AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", users=(("alice", "pw"),))
    with running_app(config) as app:
        admin = client(app.url, auth=("alice", "pw"))
        archive, status = admin.predict("Team round", api_name="/campaign_export")
        assert "Exported Team round" in status and archive.endswith("Team-round.zip")
        assert "No Hugging Face token" in admin.predict("Team round", "me/team-round", api_name="/campaign_push")
        monkeypatch.setenv("HF_TOKEN", "hf_server_secret")
        assert "not a Hub dataset repository id" in admin.predict("Team round", "me/a b", api_name="/campaign_push")
        assert "with its owner" in admin.predict("Team round", "team-round", api_name="/campaign_push")
        assert calls == []  # nothing reached the Hub before the token and the repository were right
        pushed = admin.predict("Team round", "me/team-round", api_name="/campaign_push")
        assert "Pushed Team round to https://huggingface.co/datasets/me/team-round" in pushed
        assert "hf_server_secret" not in pushed
    assert calls == [
        ("token", "hf_server_secret"),
        ("create", "me/team-round", "dataset", True),
        ("upload", "me/team-round", ["README.md", "data/train-00000-of-00001.parquet"]),
    ]
    with running_app(AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data")) as app:  # name mode
        file, refused = client(app.url).predict("Team round", api_name="/campaign_export")
        assert file is None and "Only an administrator can export a campaign" in refused
        assert "Only an administrator" in client(app.url).predict("Team round", "me/x", api_name="/campaign_push")

    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "unzipped")
    rows = datasets.load_dataset(str(tmp_path / "unzipped"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(rows) == 2 and rows.features["image"].__class__.__name__ == "Image"
    assert set(rows["output_id"]) == set(campaigns.output_ids("Team round"))
    for row in rows:
        assert sorted((review["reviewer"], tuple(review["flags"])) for review in row["reviews"]) == [
            ("Dr One", ("contradiction",)),
            ("Dr Two", ("sound",)),
        ]
        assert row["reviews"][0]["spans"] == [{"start": 7, "end": 12, "label": "irrelevant"}]
        assert row["flag_contradiction"] == 0.5 and sorted(row["flags"]) == ["contradiction", "sound"]  # ties count
    assert "# Review campaign: Team round" in (tmp_path / "unzipped" / "README.md").read_text()


def test_administrators_create_a_campaign_from_a_dataset_the_served_model_answers(
    formatted_model_dir: Path, tmp_path: Path
) -> None:
    """Upload a dataset and its images: the app's model answers every question, and an interrupted
    generation is continued from the set-up panel with only the store left."""
    import json

    from gradio_client import handle_file
    from PIL import Image

    from medvlm.campaign_generation import plan_campaign
    from medvlm.model import load_model
    from medvlm.streaming import GenerationSettings, answer_batch
    from medvlm.vqa_records import load_records

    rows = []
    for index in range(3):
        Image.new("L", (40 + 8 * index, 40), 60 * index).save(tmp_path / f"scan{index}.png")
        rows.append(
            {"id": f"r{index}", "image": f"images/scan{index}.png", "question": f"Finding {index}?",
             "options": ["Effusion", "Normal"], "answer": "AB"[index % 2], "question_type": "Disease Diagnosis"}
        )  # fmt: skip
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    upload = [handle_file(str(data)), *(handle_file(str(tmp_path / f"scan{index}.png")) for index in range(3))]
    store = tmp_path / "data"
    config = AppConfig(model=str(formatted_model_dir), data_dir=store, users=(("alice", "pw"),))
    with running_app(config) as app:
        admin = client(app.url, auth=("alice", "pw"))
        choices, status = admin.predict(upload, "Answered here", 1, "", False, "dataset", api_name="/campaign_create")
        assert "Created campaign Answered here: all 3 questions answered by" in status, status
        campaigns = Campaigns(AnnotationStore(store))
        generation = campaigns.generation("Answered here")
        assert generation.done and generation.settings["max_new_tokens"] == 512  # the paper's settings
        loaded = load_model(formatted_model_dir)
        images = [Image.open(tmp_path / f"scan{index}.png").convert("RGB") for index in range(3)]
        expected = answer_batch(
            loaded, images, [row["question"] for row in rows], [row["options"] for row in rows], GenerationSettings()
        )
        stored = [campaigns.store.output(output_id) for output_id in campaigns.output_ids("Answered here")]
        assert [output.completion for output in stored] == [answer.completion for answer in expected]
        assert {output.question_type for output in stored} == {"Disease Diagnosis"}

        # An interrupted generation (its questions stored, no answer yet): the set-up panel continues it.
        uploaded = {f"scan{index}.png": tmp_path / f"scan{index}.png" for index in range(3)}
        records, _ = load_records(data, image_files=uploaded)
        plan_campaign(
            campaigns, "Cut short", records, loaded=loaded, settings=GenerationSettings(max_new_tokens=16),
            reviews_per_output=1, created_by="alice",
        )  # fmt: skip
        shown = named(admin.predict("Cut short", "", api_name="/campaign_start"), CampaignShown)
        assert "still being generated (0 of 3 so far)" in shown["campaign_status"]
        status = admin.predict("Cut short", api_name="/campaign_continue_generation")
        assert "Cut short: all 3 questions answered" in status
        shown = named(admin.predict("Cut short", "", api_name="/campaign_start"), CampaignShown)
        assert shown["campaign_output_id"] in Campaigns(AnnotationStore(store)).output_ids("Cut short")

        _, refused = admin.predict([handle_file(str(data))], "No images", 1, "", False, "dataset",
                                   api_name="/campaign_create")  # fmt: skip
        assert "3 question(s) name an image that was not uploaded (scan0.png, scan1.png, scan2.png)" in refused
    assert [known.name for known in Campaigns(AnnotationStore(store)).all()] == ["Cut short", "Answered here"]


def plotted(plot: dict) -> dict:
    """A dashboard plot's frame as gradio_client returns it (an update carries it as its value)."""
    return plot.get("value", plot)


def judge_until_done(url: str, campaign: str, reviewer: str, auth: tuple[str, str]) -> list[str]:
    """One reviewer's loop over a comparison campaign through the API: Start, then a verdict and next."""
    user = client(url, auth=auth)
    shown = named(user.predict(campaign, reviewer, api_name="/campaign_start"), CampaignShown)
    judged = []
    while shown["campaign_output_id"]:
        assert (shown["campaign_first_header"], shown["campaign_second_header"]) == ("### Answer 1", "### Answer 2")
        assert shown["campaign_second_output_id"] and 'class="option chosen' in shown["campaign_second_answer"]
        pair = frozenset((shown["campaign_output_id"], shown["campaign_second_output_id"]))
        judged.append(pair)
        shown = named(
            user.predict(
                campaign_flags=[],
                campaign_reviewer=reviewer,
                campaign_output_id=shown["campaign_output_id"],
                campaign_verdict="second",
                campaign_second_output_id=shown["campaign_second_output_id"],
                api_name="/campaign_submit",
            ),
            CampaignShown,
        )
        assert "Saved your verdict" in shown["campaign_status"] and "answer 2 from **" in shown["campaign_status"]
    assert "Nothing is left for you" in shown["campaign_case"]
    return judged


def test_a_comparison_of_two_uploaded_runs_is_judged_by_four_reviewers_k_times_each_pair(
    formatted_model_dir: Path, tmp_path: Path
) -> None:
    """An administrator imports two runs of the same questions as a blind comparison campaign; four reviewers
    judge it at once through the API: every pair ends with exactly k verdicts, nobody judges one twice, and each
    verdict names the output that was shown second. A flips-only import keeps the one question that flipped."""
    import json

    from gradio_client import handle_file
    from PIL import Image

    from helpers import samples_file

    images = [f"images/scan{index}.png" for index in range(3)]
    for index in range(3):
        Image.new("L", (40, 40 + 4 * index), 50 * index).save(tmp_path / f"scan{index}.png")
    runs = {}
    for name in ("base", "grpo"):
        (tmp_path / name).mkdir()
        questions = [f"Which finding in scan {index}?" for index in range(3)]
        runs[name] = samples_file(
            tmp_path / name, images, questions=questions, model={"model": f"{name}-model"}, correct=True
        )
    lines = [json.loads(line) for line in runs["grpo"].read_text().splitlines()]
    for line in lines:
        line["completion"] = "<think>The lung fields are clear.</think><answer>B</answer>"
    lines[1]["correct"] = False  # the second question flips
    runs["grpo"].write_text("".join(json.dumps(line) + "\n" for line in lines))
    upload = [handle_file(str(runs["base"])), *(handle_file(str(tmp_path / f"scan{index}.png")) for index in range(3))]
    users = tuple((f"rev{index}", "pw") for index in range(4))
    config = AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", users=users)
    with running_app(config) as app:
        admin = client(app.url, auth=users[0])
        no_second_run = (upload, "Base vs GRPO", 2, "", True, "comparison", None)
        _, refused = admin.predict(*no_second_run, api_name="/campaign_create")
        assert "and the second run's samples.jsonl" in refused
        _, status = admin.predict(
            upload, "Base vs GRPO", 2, "Which reasoning reads the image?", True, "comparison",
            handle_file(str(runs["grpo"])), api_name="/campaign_create",
        )  # fmt: skip
        assert status == "Created comparison campaign Base vs GRPO: 3 pairs, 2 verdict(s) each.", status
        _, status = admin.predict(
            upload, "Flips", 1, "", True, "comparison", handle_file(str(runs["grpo"])), True,
            api_name="/campaign_create",
        )  # fmt: skip
        assert status == "Created comparison campaign Flips: 1 pairs, 1 verdict(s) each.", status
        (tmp_path / "rerun").mkdir()  # another model that wrote the base model's very answers
        rerun = samples_file(tmp_path / "rerun", images, questions=questions, model={"model": "rerun"}, correct=True)
        alike = handle_file(str(rerun))
        _, status = admin.predict(upload, "Same twice", 1, "", True, "comparison", alike, api_name="/campaign_create")
        assert "Created comparison campaign Same twice: 3 pairs" in status
        assert "all pairs have the same completion in both runs (were both runs made by the same model" in status
        store = AnnotationStore(tmp_path / "data")
        flipped = [store.output(first).question for first, _ in ComparisonCampaigns(Campaigns(store)).pairs("Flips")]
        assert flipped == [lines[1]["question"]]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            done = dict(
                zip(
                    [user for user, _ in users],
                    pool.map(lambda auth: judge_until_done(app.url, "Base vs GRPO", auth[0], auth), users),
                    strict=True,
                )
            )
        summary, agreement, _, split = admin.predict("Base vs GRPO", api_name="/campaign_report")
        assert summary.startswith("3 of 3 pairs complete, 6 of 6 verdicts") and "tie 0; both poor 0" in summary
        row = dict(zip(agreement["headers"], agreement["data"][0], strict=True))
        assert row["pairs judged by two or more"] == 3 and row["note"].startswith("too few pairs")
        refused = admin.predict("Base vs GRPO", "1", [], "", None, api_name="/campaign_adjudicate")
        assert "Choose the adjudicated verdict" in refused
        decided = admin.predict("Base vs GRPO", "1", [], "base reads it", "first", api_name="/campaign_adjudicate")
        assert decided.startswith("Adjudicated pair 1: base-model better"), decided
        _, _, _, split = admin.predict("Base vs GRPO", api_name="/campaign_report")
        assert split["headers"][-1] == "adjudicated"
        plots = admin.predict("Base vs GRPO", api_name="/campaign_dashboard")
        flipped_plots = admin.predict("Flips", api_name="/campaign_dashboard")
    over_time, by_modality, _, by_model, per_reviewer = map(plotted, plots)
    assert plots[0]["title"] == "Verdicts submitted so far" and over_time["data"][-1][-1] == 6
    assert plots[3]["title"] == "Verdicts in this comparison, by model" and plots[3]["color_title"] == "Verdict"
    outcome_rows = [dict(zip(by_model["columns"], row, strict=True)) for row in by_model["data"]]
    assert {row["model_id"] for row in outcome_rows} == {"base-model vs grpo-model"}
    assert {row["label"] for row in outcome_rows} <= {"base-model", "grpo-model"}  # every verdict chose a side
    assert sum(row["count"] for row in outcome_rows) == 6 and sum(row["rate"] for row in outcome_rows) == 1
    assert sum(row[2] for row in by_modality["data"]) == 6
    assert {row[0]: row[1] for row in per_reviewer["data"]} == {
        user: len(pairs) for user, pairs in done.items() if pairs
    }
    # The flipped pair is one of the pairs above: its two verdicts count in both campaigns, as reviews of an output do.
    assert (
        plotted(flipped_plots[0])["data"][-1][-1] == 2
        and sum(row[1] for row in plotted(flipped_plots[-1])["data"]) == 2
    )
    assert all(len(set(judged)) == len(judged) for judged in done.values())  # nobody judged a pair twice
    store = AnnotationStore(tmp_path / "data")
    first_pair = ComparisonCampaigns(Campaigns(store)).pairs("Base vs GRPO")[0]
    (adjudicated,) = ComparisonCampaigns(Campaigns(store)).adjudications("Base vs GRPO").values()
    assert adjudicated.preferred == first_pair[0] and adjudicated.reviewer == "rev0"  # the base run's answer
    verdicts = store.verdicts()
    per_pair: dict[frozenset, list[str]] = {}
    for verdict in verdicts:
        per_pair.setdefault(frozenset((verdict.output_a, verdict.output_b)), []).append(verdict.reviewer)
        assert verdict.blind and verdict.preferred != verdict.shown_first  # "answer 2", by output
    assert len(per_pair) == 3 and all(len(reviewers) == 2 == len(set(reviewers)) for reviewers in per_pair.values())
    assert sum(map(len, done.values())) == 6
    models = {store.output(verdict.preferred).model["model"] for verdict in verdicts}
    assert models <= {"base-model", "grpo-model"}
