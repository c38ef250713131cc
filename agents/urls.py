"""The one URL parser of the pipeline: the safety policy (agents/policy.py) and the http tool
(agents/executors/http.py) both read a URL only through :func:`parse_url`, so the host the
policy allows is the host the tool connects to.

It is strict on purpose: anything it cannot read the one obvious way is refused with a reason
(:class:`BadUrl`), never guessed at, and never raises anything else. Refused: other schemes
than http/https, credentials (``user@``; ``http://127.0.0.1:P\\@example.com/`` reads as
credentials to one parser and a host to another), backslashes, whitespace, control and
non-ASCII characters (an internationalised host must be given in its ``xn--`` form), percent
signs in the host, an empty host, a port that is not 1-65535 in at most five digits, host
labels that are not letters, digits and inner hyphens, and numeric hosts other than a plain
dotted-quad IPv4 address (``0x7f.1`` or ``2130706433`` mean 127.0.0.1 to ``inet_aton``).
The tool fetches :attr:`Url.text`, rebuilt from the parts the policy judged.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_URL = 2048
SCHEMES = ("http", "https")
_SHAPE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]{0,31})://([^/?#]*)([/?#].*)?", re.DOTALL)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


class BadUrl(ValueError):
    """The URL is refused; ``str(error)`` says why (shown in the report)."""


@dataclass(frozen=True, slots=True)
class Url:
    scheme: str  # lower case: http or https
    host: str  # lower case; an IPv6 address without brackets
    port: int | None  # as written (None: the scheme's default)
    rest: str  # path, query and fragment, as written ("" or starting with / ? #)

    @property
    def netloc(self) -> str:
        """The authority as it is sent: host (bracketed for IPv6) and the explicit port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def text(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.rest or '/'}"

    def allowed(self, hosts: list[str]) -> bool:
        """On the allow-list: the host alone, or host:port as written in the URL."""
        names = {h.lower() for h in hosts}
        return self.host in names or self.netloc in names


def parse_url(value: object) -> Url:
    """The URL, or :class:`BadUrl` with the reason (module docstring)."""
    if not isinstance(value, str):
        raise BadUrl("url must be a string")
    if len(value) > MAX_URL:
        raise BadUrl(f"url is longer than {MAX_URL} characters")
    if "\\" in value:
        raise BadUrl("url contains a backslash")
    odd = next((c for c in value if not "\x21" <= c <= "\x7e"), None)
    if odd is not None:
        raise BadUrl(f"url contains a space, control or non-ASCII character {odd!r}")
    shape = _SHAPE.fullmatch(value)
    if shape is None:
        raise BadUrl("url is not of the form scheme://host[:port][/path]")
    scheme, authority, rest = shape.group(1).lower(), shape.group(2), shape.group(3) or ""
    if scheme not in SCHEMES:
        raise BadUrl(f"scheme {scheme!r} is not allowed (http or https only)")
    if "@" in authority:
        raise BadUrl("credentials (user@ or user:password@) in URLs are not allowed")
    host, port = _split_authority(authority)
    return Url(scheme, host, port, rest)


def _split_authority(authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise BadUrl("unclosed '[' in the host")
        host, after = _ipv6(authority[1:end]), authority[end + 1 :]
        if after and not after.startswith(":"):
            raise BadUrl("unexpected characters after the IPv6 address")
        return host, _port(after[1:]) if after else None
    host, sep, port = authority.partition(":")
    return _hostname(host), _port(port) if sep else None


def _ipv6(text: str) -> str:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise BadUrl(f"{text[:80]!r} is not an IPv6 address") from None
    if address.scope_id:
        raise BadUrl("IPv6 zone ids are not allowed")
    return address.compressed


def _port(text: str) -> int:
    if not _PORT.fullmatch(text):
        raise BadUrl(f"port {text[:16]!r} is not a number of 1-5 digits")
    port = int(text)
    if not 1 <= port <= 65535:
        raise BadUrl(f"port {port} is out of range 1-65535")
    return port


def _hostname(text: str) -> str:
    host = text.lower()
    if not host:
        raise BadUrl("url has no host")
    if len(host) > 253:
        raise BadUrl("host name is longer than 253 characters")
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise BadUrl(f"host {text[:80]!r} is not a valid host name (letters, digits, '-', '.')")
    last = labels[-1]
    if last.isdigit() or last.startswith("0x"):  # a number: only a plain dotted quad
        if len(labels) != 4 or not all(_octet(label) for label in labels):
            raise BadUrl(f"host {text[:80]!r} is not a dotted-quad IPv4 address")
    return host


def _octet(label: str) -> bool:
    return label.isdigit() and (label == "0" or not label.startswith("0")) and int(label) < 256
