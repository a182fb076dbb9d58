"""A review campaign made from a dataset and a model: the answers generated once, up front, resumably.

Two steps, so that an interruption (a killed process, a Space restarting, Ctrl+C) loses at most
the batch being answered:

1. :func:`plan_campaign` stores the dataset's questions and their rendered, de-identified images
   in the data folder, with the model and the decoding settings that will answer them
   (:meth:`medvlm.annotations.campaigns.Campaigns.plan`).
2. :func:`generate_answers` answers the questions that have no answer yet, a batch at a time, and
   stores each batch's outputs in one transaction. Run it again, from the command line
   (``medvlm campaign generate``) or the app's set-up panel, and it continues where it stopped.

Reviewers are handed outputs once every question is answered, so all of them review one fixed set.
The answers are generated as ``train.evaluate`` generates them (:func:`medvlm.streaming.answer_batch`:
the paper's greedy decoding by default, read with the same parser), and each batch is seeded from
the settings' seed and its first position, so a resumed campaign gets the answers an uninterrupted
one would have.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import torch

from medvlm.annotations import ModelOutput
from medvlm.annotations.campaigns import Campaign, Campaigns, Generation, PlannedQuestion
from medvlm.annotations.records import with_dataset_modality
from medvlm.errors import ImageLoadError, MedVLMError
from medvlm.images import load_image
from medvlm.model import LoadedModel
from medvlm.probes import ProbeCase, ProbeKind, ask_in_batches, partner_for
from medvlm.prompt import PromptStyle, as_style
from medvlm.streaming import BatchAnswer, GenerationSettings, answer_batch
from medvlm.vqa_records import VQARecord

AnswerBatch = Callable[..., list[BatchAnswer]]
""":func:`medvlm.streaming.answer_batch`'s signature (the app wraps it for ZeroGPU)."""


def plan_campaign(
    campaigns: Campaigns,
    name: str,
    records: Sequence[VQARecord],
    *,
    loaded: LoadedModel,
    settings: GenerationSettings | None = None,
    style: PromptStyle | str | None = None,
    batch_size: int = 8,
    reviews_per_output: int,
    guidelines: str = "",
    blind: bool = False,
    created_by: str,
    probes: Sequence[ProbeKind | str] = (),
    show_probes: bool = True,
) -> Campaign:
    """Store a campaign of ``records``' questions, to be answered by ``loaded`` with ``settings``.

    ``probes`` (:mod:`medvlm.probes`) are run on every answer as part of the generation, and shown
    to reviewers unless ``show_probes`` is False (a blind campaign's administrator may hide them).

    Any question whose image cannot be read stops the plan with its id: a campaign with holes is
    not the dataset. The images are read one at a time as they are stored, never all at once.
    """
    if not records:
        raise MedVLMError("The dataset holds no question to answer.")
    campaigns.check_new(name, reviews_per_output)  # before reading every image
    settings = (settings or GenerationSettings()).validate()
    style = loaded.prompt_style if style is None else as_style(style)
    return campaigns.plan(
        name,
        (_planned(record) for record in records),
        model=str(loaded.describe()["model"]),
        settings=settings.to_dict(),
        prompt_style=style.value,
        batch_size=batch_size,
        reviews_per_output=reviews_per_output,
        guidelines=guidelines,
        blind=blind,
        created_by=created_by,
        probes=[ProbeKind(kind).value for kind in probes],
        show_probes=show_probes,
    )


def _planned(record: VQARecord) -> PlannedQuestion:
    """A dataset row as a campaign's question, its image rendered and de-identified as the model will see it."""
    try:
        image = load_image(record.image_path)
    except (ImageLoadError, OSError) as error:
        raise MedVLMError(f"Question {record.id}, image {record.image_path.name}: {error}") from None
    return PlannedQuestion(
        source_id=record.id,
        image=image.image,
        image_metadata=with_dataset_modality(image.metadata.to_dict(), record.modality),
        question=record.question,
        options=list(record.options),
        correct_answer=record.answer,
        question_type=record.question_type,
    )


def generate_answers(
    campaigns: Campaigns,
    name: str,
    loaded: LoadedModel,
    *,
    progress: Callable[[int, int], None] | None = None,
    answer: AnswerBatch = answer_batch,
) -> Generation:
    """Answer the campaign's questions that have none yet, then probe the answers not yet probed.

    ``progress(done, total)`` is called before the first batch and after each one (a tqdm bar,
    Gradio's progress); with probes, each answer counts twice in ``total``: answered, then probed.
    Only the model the campaign was planned with may answer it: answers from two models in one
    campaign would make its failure rates meaningless. Each answer's probes are stored together,
    so an interrupted run probes again only the answers it had not finished.
    """
    plan = campaigns.generation(name)
    if plan is None:
        raise MedVLMError(
            f"The campaign {name!r} was made from an evaluation run: its answers are that run's, "
            "there is nothing to generate."
        )
    described = loaded.describe()
    if described["model"] != plan.model:
        raise MedVLMError(
            f"The campaign {name!r} is answered by {plan.model}, but the model loaded is {described['model']}. "
            f"Load {plan.model} to continue it."
        )
    settings = GenerationSettings(**plan.settings).validate()
    style = as_style(plan.prompt_style)
    pending = campaigns.pending_questions(name)
    answered = plan.answered
    total = plan.planned * (2 if plan.probes else 1)
    if progress is not None:
        progress(answered + plan.probed, total)
    campaign_id = campaigns.get(name).id
    for start in range(0, len(pending), plan.batch_size):
        batch = pending[start : start + plan.batch_size]
        if settings.seed is not None:
            torch.manual_seed(settings.seed + batch[0].position)
        answers = answer(
            loaded,
            [question.image for question in batch],
            [question.question for question in batch],
            [question.options for question in batch],
            settings,
            style=style,
        )
        generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        campaigns.add_answers(
            name,
            [
                (
                    question.position,
                    ModelOutput.answered(
                        reply.parsed,
                        output_id=_output_id(campaign_id, question.position, plan.model, reply.completion),
                        image=question.image,
                        image_metadata=question.image_metadata,
                        question=question.question,
                        options=question.options,
                        correct_answer=question.correct_answer,
                        stop_reason=reply.stop_reason,
                        model=described,
                        settings=settings.to_dict(),
                        prompt_style=style.value,
                        timing=None,
                        generated_at=generated_at,
                        question_type=question.question_type,
                    ),
                )
                for question, reply in zip(batch, answers, strict=True)
            ],
        )
        answered += len(batch)
        if progress is not None:
            progress(answered + plan.probed, total)
    if plan.probes:
        _probe_answers(
            campaigns, name, loaded, plan, settings, answer, lambda done: progress and progress(answered + done, total)
        )
    return campaigns.generation(name)


def _probe_answers(
    campaigns: Campaigns,
    name: str,
    loaded: LoadedModel,
    plan: Generation,
    settings: GenerationSettings,
    answer: AnswerBatch,
    progress: Callable[[int], Any],
) -> None:
    """Probe every answer without stored probes, a batch at a time; partners: the campaign's own images."""
    pool = campaigns.output_images(name)
    sha_of = {output_id: sha for output_id, sha, _ in pool}
    by_sha = [(sha, modality) for _, sha, modality in pool]
    kinds = [ProbeKind(kind) for kind in plan.probes]
    probed = plan.probed
    pending = campaigns.unprobed_outputs(name)
    for start in range(0, len(pending), plan.batch_size):
        batch = pending[start : start + plan.batch_size]
        cases = []
        for output in batch:
            partner = partner_for(sha_of[output.output_id], (output.image_metadata or {}).get("modality"), by_sha)
            cases.append(
                ProbeCase(
                    output.image,
                    output.question,
                    tuple(output.options),
                    output.completion,
                    as_style(output.prompt_style),
                    partner=campaigns.store.stored_image(partner) if partner is not None else None,
                    partner_id=partner[:12] if partner is not None else None,
                )
            )
        replies = ask_in_batches(loaded, cases, kinds, settings, plan.batch_size, answer)
        for output, answers in zip(batch, replies, strict=True):
            campaigns.store.add_probe_answers(output, answers, probed_by=plan.model)
        probed += len(batch)
        progress(probed)


def _output_id(campaign_id: int, position: int, model: str, completion: str) -> str:
    """Derived, not random: the same answer to the same campaign question is the same stored output."""
    identity = json.dumps(["campaign", campaign_id, position, model, completion])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]
