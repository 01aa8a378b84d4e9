"""Secrets in the settings: given inline, from a file or from an environment variable, held as
pydantic SecretStr (printed as `**********`), and URLs redacted before they reach an error or a log.

Why files and variables: a YAML file is copied, diffed and pasted into tickets; the password of
the alert database or the SMTP relay belongs in a Docker/Kubernetes secret (a file under
/run/secrets) or the service's environment, not in it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

MASK = "***"


def secret_from(name: str, inline: SecretStr | None, file: Path | None, env: str | None) -> SecretStr | None:
    """The secret `name` from exactly one of: the setting itself, `<name>_file` (an absolute path;
    one trailing newline dropped) or `<name>_env` (a variable that must be set). ValueError names
    the setting, never the value."""
    given = [n for n, v in ((name, inline), (f"{name}_file", file), (f"{name}_env", env)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one of {', '.join(given)}, not several")
    if file is not None:
        if not file.is_absolute():
            raise ValueError(f"{name}_file must be an absolute path (e.g. /run/secrets/{name}): {file}")
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{name}_file {file} cannot be read: {exc.strerror}") from None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            raise ValueError(f"{name}_file {file} is empty")
        return SecretStr(text)
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ValueError(f"{name}_env: the environment variable {env} is not set")
        return SecretStr(value)
    return inline


def revealed(secret: SecretStr | None) -> str | None:
    """The value, for the one call that uses it (a login, a signature, a connection)."""
    return secret.get_secret_value() if secret is not None else None


def redact_url(url: str) -> str:
    """`postgresql://u:pw@h/db?password=x&sslmode=require` -> `postgresql://u:***@h/db?password=***&sslmode=***`:
    the password of the user part and every query value (webhook URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            name, colon, _password = user.partition(":")
            netloc = f"{name}:{MASK}@{host}" if colon else f"{name}@{host}"
        query = urlencode([(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "(an unreadable URL)"
