"""The languages Canary speaks, and how a request names one."""

from __future__ import annotations

from passerelle.core.errors import InvalidRequest

# Canary-1b-v2's languages (ISO 639-1), with the names OpenAI's verbose_json reports.
LANGUAGES = {
    "bg": "bulgarian", "cs": "czech", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "et": "estonian", "fi": "finnish", "fr": "french", "hr": "croatian", "hu": "hungarian",
    "it": "italian", "lt": "lithuanian", "lv": "latvian", "mt": "maltese", "nl": "dutch", "pl": "polish",
    "pt": "portuguese", "ro": "romanian", "ru": "russian", "sk": "slovak", "sl": "slovenian", "sv": "swedish",
    "uk": "ukrainian",
}  # fmt: skip
_CODES_BY_NAME = {name: code for code, name in LANGUAGES.items()}


def language_code(value: str) -> str | None:
    """An ISO 639-1 code, a regional variant of one (en-US) or an English name → the code; None if unknown."""
    lowered = value.strip().lower().replace("_", "-")
    if lowered in _CODES_BY_NAME:
        return _CODES_BY_NAME[lowered]
    base = lowered.split("-", 1)[0]
    return base if base in LANGUAGES else None


def require_language(value: str, param: str) -> str:
    """The code of the language a request (or a setting) names; 400 for one Canary does not speak."""
    code = language_code(value)
    if code is None:
        raise InvalidRequest(
            f"Language '{value}' is not supported by Canary. Supported: {', '.join(sorted(LANGUAGES))}.",
            param=param,
            code="unsupported_language",
        )
    return code


def require_identified(language: str, probability: float) -> str:
    """The code of the language the identification model heard; 400 naming it when Canary does not speak it."""
    code = language_code(language)
    if code is None:
        raise InvalidRequest(
            f"The spoken language was identified as '{language}' (probability {probability:.2f}), which Canary does not "
            f"support. Supported: {', '.join(sorted(LANGUAGES))}. If the identification is wrong, name the language "
            "with the 'language' field.",
            param="language",
            code="unsupported_language",
        )
    return code
