"""The small exception tree: what went wrong on our side or the world's; business outcomes are decisions, not exceptions."""

from __future__ import annotations


class MailcaseError(Exception):
    """Base of every error mailcase raises on purpose."""


class ConfigError(MailcaseError):
    """The configuration is wrong; the message names the dotted key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config error: {key}: {problem}")
        self.key = key
        self.problem = problem


class DirectoryError(MailcaseError):
    """The directory file (`mailcase directory import`) is wrong; the message names the dotted key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"directory error: {key}: {problem}")
        self.key = key
        self.problem = problem


class UsageError(MailcaseError):
    """A command was asked for something that cannot be done (unknown case, illegal transition)."""


class TransientError(MailcaseError):
    """Try again later: the database is locked or unreachable, the relay is down."""


class DeliveryError(MailcaseError):
    """An outgoing message could not be delivered; `permanent` says whether retrying can help."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class OAuthError(MailcaseError):
    """An OAuth2 grant gave no access token. `signed_out`: retrying cannot help until someone
    signs in again (`mailcase oauth login`) or fixes the app registration (revoked, expired,
    wrong secret); otherwise the token endpoint was unreachable and a retry may help. The message
    never contains a token or a secret."""

    def __init__(self, message: str, *, signed_out: bool) -> None:
        super().__init__(message)
        self.signed_out = signed_out
