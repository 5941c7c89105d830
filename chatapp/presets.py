"""Task presets: the system prompt a conversation starts with, kept in presets.toml.

The operator's configured prompt (CHATAPP_SYSTEM_PROMPT) stays the prompt of the default preset,
`chat`; the other presets bring their own. A conversation's own custom prompt beats both.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources

DEFAULT_PRESET = "chat"
LANGUAGE_PLACEHOLDER = "{language}"
DEFAULT_LANGUAGE = "English"

# The translate target's <select>. The model is only ever told one of these, never free text.
LANGUAGES: list[str] = [
    "English", "French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Polish",
    "Ukrainian", "Russian", "Turkish", "Arabic", "Hindi", "Chinese (Simplified)", "Japanese", "Korean",
]

_KEY = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")  # keys travel in form values and URLs


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    prompt: str
    needs_language: bool


def parse_presets(text: str) -> dict[str, Preset]:
    """Presets from TOML text (one table per preset, `label` and `prompt` each), in file order.

    Raises ValueError on anything the app could not use, so a broken file stops it at start."""
    presets = {}
    for key, table in tomllib.loads(text).items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"preset {key!r}: keys are lowercase letters, digits and hyphens")
        if not isinstance(table, dict) or set(table) != {"label", "prompt"}:
            raise ValueError(f"preset {key!r}: needs exactly `label` and `prompt`")
        label, prompt = table["label"], table["prompt"]
        if not (isinstance(label, str) and label.strip() and isinstance(prompt, str) and prompt.strip()):
            raise ValueError(f"preset {key!r}: `label` and `prompt` must be non-blank strings")
        presets[key] = Preset(key, label.strip(), prompt.strip(), LANGUAGE_PLACEHOLDER in prompt)
    if DEFAULT_PRESET not in presets:
        raise ValueError(f"the {DEFAULT_PRESET!r} preset is missing")
    if presets[DEFAULT_PRESET].needs_language:
        raise ValueError(f"the {DEFAULT_PRESET!r} preset cannot need a language")
    return presets


# importlib.resources: read from inside the installed package (a wheel, a zip), not from a path.
PRESETS: dict[str, Preset] = parse_presets(
    resources.files(__package__).joinpath("presets.toml").read_text(encoding="utf-8")
)


def language_or_default(language: str | None) -> str:
    """The LANGUAGES entry `language` names (case and surrounding spaces ignored), else English."""
    wanted = (language or "").strip().casefold()
    return next((name for name in LANGUAGES if name.casefold() == wanted), DEFAULT_LANGUAGE)


def system_prompt(
    preset_key: str | None, *, language: str | None = None, custom: str | None = None, fallback: str
) -> str:
    """The system prompt for a conversation, first that applies:

    1. `custom`, the conversation's own prompt, if not blank (returned stripped);
    2. for the `chat` preset, and for a preset key that is None or unknown (which means `chat`):
       `fallback`, the operator's configured CHATAPP_SYSTEM_PROMPT, so a chat behaves as it did
       before presets; the `chat` preset's own prompt only if `fallback` is blank;
    3. any other preset's own prompt, with `{language}` replaced by `language` if it is one of
       LANGUAGES (see `language_or_default`), else by English. `language` is ignored by presets
       that do not need one.
    """
    if custom and custom.strip():
        return custom.strip()
    preset = PRESETS.get(preset_key or DEFAULT_PRESET) or PRESETS[DEFAULT_PRESET]
    if preset.key == DEFAULT_PRESET:
        return fallback.strip() or preset.prompt
    if preset.needs_language:
        # replace(), not format(): a brace elsewhere in a prompt is text, not a field.
        return preset.prompt.replace(LANGUAGE_PLACEHOLDER, language_or_default(language))
    return preset.prompt
