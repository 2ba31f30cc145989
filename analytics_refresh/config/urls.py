"""URLs that may hold a secret: checked before use, and named in messages without it.

libpq splits ``postgresql://user:password@host/db`` at the first ``/``, ``?`` or ``#`` and
at ``@``: a password holding one of ``/ @ : ? #`` unencoded is silently cut into pieces
that land in the host, the port or the database name, and libpq's own error messages then
quote those pieces. So a URL whose shape is ambiguous is refused before it is used, and no
message ever quotes any part of a URL's user information.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions

MASK = "[redacted]"
# Query parameters of a libpq URL that hold a secret (the rest are options like sslmode).
_DATABASE_SECRETS = ("password", "sslpassword")
_KEYWORD_PASSWORD = re.compile(r"\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)

URL_SCHEMES = ("postgresql://", "postgres://")
ENCODE_HINT = (
    "percent-encode the special characters of a password (/ as %2F, @ as %40, : as %3A, "
    "? as %3F, # as %23, % as %25), e.g. postgresql://user:p%40ss@host:5432/dbname"
)
_PORTS = re.compile(r"^(\d*)(,\d*)*$")


def check_database_url(value: str) -> str | None:
    """Return what is wrong with a libpq URL or connection string, or None if it is sound.

    The answer never quotes the value: any part of it may be a password.
    """
    if value.lower().startswith(URL_SCHEMES):
        problem = _url_shape(value.split("://", 1)[1])
        if problem:
            return f"the URL cannot be parsed unambiguously ({problem}); {ENCODE_HINT}"
    try:
        psycopg2.extensions.parse_dsn(value)
    except psycopg2.ProgrammingError:
        return (
            "expected a PostgreSQL URL such as postgresql://user:password@host:5432/dbname "
            f"or a key=value connection string; {ENCODE_HINT}"
        )
    return None


def _url_shape(rest: str) -> str | None:
    """Check the part of a URL after ``scheme://``: one ``@``, inside the authority."""
    if "#" in rest:
        return "it holds a '#'"
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, after = rest[:end], rest[end:]
    if "@" in after:
        return "an '@' follows the host part"
    if authority.count("@") > 1:
        return "it holds more than one '@'"
    userinfo, _, hosts = authority.rpartition("@")
    if userinfo.count(":") > 1:
        return "the user information holds more than one ':'"
    for host in hosts.split(","):
        port = host.rsplit("]", 1)[-1].partition(":")[2] if ":" in host else ""
        if port and not _PORTS.match(port):
            return "a port is not a number"
    return None


def database_password(url: str | None) -> str | None:
    """Return the password inside a PostgreSQL URL or connection string, if any."""
    if not url:
        return None
    try:
        return psycopg2.extensions.parse_dsn(url).get("password") or None
    except psycopg2.ProgrammingError:
        return None


def describe_database(url: str) -> str:
    """Name a database for messages: its name, host and port, never its user or password."""
    if check_database_url(url):
        return "the database named by DATABASE_URL (unparseable)"
    params = psycopg2.extensions.parse_dsn(url)
    host = params.get("host", "localhost")
    port = f":{params['port']}" if "port" in params else ""
    return f"database {params.get('dbname', '?')!r} on {host}{port}"


def http_url(text: str) -> str:
    """Parse an http(s) URL (the API, a heartbeat, a Pushgateway)."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return text.strip().rstrip("/")


def public_host(url: str) -> str:
    """Return only the host of ``url``: its path may be a key (a heartbeat check's UUID)."""
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"


# -- masking ----------------------------------------------------------------------------------
def url_secrets(url: str | None) -> tuple[str, ...]:
    """Return the parts of a URL setting that may be secret, as written and decoded: the
    password of its user information, and the values of its query string (for a
    PostgreSQL URL or connection string, its password parameters only)."""
    if not url:
        return ()
    found: list[str] = []
    database = not url.lower().startswith(("http://", "https://"))
    if database:
        found.append(database_password(url) or "")
    try:
        parts = urlsplit(url.strip())
        password = parts.password
    except ValueError:
        parts, password = None, None
    if parts is not None and parts.netloc:
        if password:
            raw = parts.netloc.rpartition("@")[0].partition(":")[2]
            found += [raw, unquote(raw)]
        for piece in parts.query.split("&"):
            name, _, value = piece.partition("=")
            if value and (not database or unquote(name).lower() in _DATABASE_SECRETS):
                found += [value, unquote(value), unquote(value.replace("+", " "))]
    # Longest first: a secret that holds another is masked whole.
    unique = dict.fromkeys(v for v in found if v)
    return tuple(sorted(unique, key=len, reverse=True))


def display_url(url: str) -> str:
    """Return ``url`` fit for a message: its password and query values masked."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url if "@" not in url and "?" not in url else "(a URL that cannot be parsed)"
    if not parts.netloc:
        # A key=value connection string: its password values.
        return _KEYWORD_PASSWORD.sub(rf"\1{MASK}", url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
    query = "&".join(
        f"{quote(name, safe='')}={MASK}" if value else quote(name, safe="")
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))
