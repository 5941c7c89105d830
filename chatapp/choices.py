"""A conversation's choices: its task preset (and translate's language), and its model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import presets
from .config import Config
from .errors import Refused
from .history import build_history, fit_history
from .storage import Conversation, Message


@dataclass(frozen=True)
class Choices:
    preset: str
    language: str
    model: str


def current(conversation: Conversation | None, models: Sequence[str]) -> Choices:
    """The conversation's choices, or the defaults; `models` are those offered (catalog.py)."""
    preset = conversation.preset if conversation and conversation.preset in presets.PRESETS else presets.DEFAULT_PRESET
    model = conversation.model if conversation and conversation.model and conversation.model in models else models[0]
    return Choices(preset, presets.language_or_default(conversation.language if conversation else None), model)


def check_model(form: Mapping[str, str], models: Sequence[str]) -> None:
    """A model that is not offered is refused, never asked for."""
    if "model" in form and form["model"] not in models:
        raise Refused("That model is not offered here (any more). Choose one from the list.")


def changes_from_form(form: Mapping[str, str], conversation: Conversation, models: Sequence[str]) -> dict[str, str]:
    """What the composer's selects change; a preset or language not on the lists is ignored (the
    defaults stand), as is a model not offered (check_model refuses it first)."""
    changes = {}
    if form.get("preset") in presets.PRESETS and form["preset"] != conversation.preset:
        changes["preset"] = form["preset"]
    if form.get("language") in presets.LANGUAGES and form["language"] != conversation.language:
        changes["language"] = form["language"]
    if form.get("model") in models and form["model"] != conversation.model:
        changes["model"] = form["model"]
    return changes


def system_prompt(conversation: Conversation, config: Config) -> str:
    return presets.system_prompt(conversation.preset, language=conversation.language,
                                 custom=conversation.system_prompt, fallback=config.system_prompt)


def context_note(conversation: Conversation | None, messages: list[Message], config: Config) -> str:
    """Says so when the oldest turns no longer fit in what is sent to the model."""
    if conversation is None or not config.context_tokens:
        return ""
    return left_out_note(fit_history(build_history(system_prompt(conversation, config), messages),
                                     config.context_tokens).left_out)


def left_out_note(left_out: int) -> str:
    if not left_out:
        return ""
    return (f"The {left_out} oldest message{'s are' if left_out > 1 else ' is'} no longer sent to the model, "
            "to fit its context.")
