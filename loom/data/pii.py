"""Secrets and personal data scrubbing: `scrub(text)` replaces what it finds by placeholders.

Kinds, in the order they are replaced (a key inside a password literal counts as a key), with
their placeholders (`PLACEHOLDERS`):
  - private_key: a PEM or OpenSSH private-key block, BEGIN line to END line (RSA, EC, DSA,
    OPENSSH, ENCRYPTED, PGP ... or plain "PRIVATE KEY") -> `<PRIVATE_KEY>`. The body must hold
    a run of 32+ base64 characters, so code that merely names the BEGIN and END lines (a parser,
    a test) is left alone; public keys and certificates are not secrets and are kept.
  - api_key: tokens whose shape their issuer fixes -> `<API_KEY>`: AWS access key ids
    (AKIA/ASIA + 16), GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), Slack tokens
    (xoxb-, xoxa-, xoxp-, xoxr-, xoxs- followed by a number), Stripe secret and restricted keys
    (sk_/rk_ + live_/test_), Google API keys (AIza + 35), OpenAI-style keys (sk- or sk-proj- + 20
    or more characters, at least one a digit, so "sk-learn-compatible-estimator" is not one),
    and JSON Web Tokens (three base64url parts, the first two starting "eyJ", i.e. '{"').
  - password: the quoted literal of an assignment to a name containing password, passwd, pwd,
    secret, token or api_key (`password = "..."`, `"apiKey": '...'`, `SECRET_KEY := "..."`,
    `'token' => '...'`, `password: str = "..."`) -> only the literal becomes `<SECRET>`. The
    literal must be 8+ characters without whitespace (prose such as "Enter your password" is
    not a secret), and not a template (`${...}`, `{{...}}`, `%(...)s`, `#{...}`), a URL, a path,
    or a `<...>` placeholder (ours included, which keeps scrubbing idempotent). The keyword may
    not run on into a lower-case letter ("tokenizer", "Secretary", but "secretKey" counts) nor,
    upper-case, into an upper-case one ("TOKENIZER"), and at most 40 name characters may follow
    it. Comparisons (`==`), calls (`password = get_password()`), f-strings and unquoted values
    are left alone.
  - email: local@domain.tld, Unicode letters allowed, the top-level domain 2+ letters ->
    `<EMAIL>`. Documentation addresses (example.com) are replaced too; `user@localhost`, having
    no dot in its domain, is not an e-mail address here (it is how code names local accounts).
    Kept as well: SSH remotes (`git@github.com:owner/repo.git`) and image variants (`icon@2x.png`).
    A known false positive, accepted: matrix products written without spaces (`x@self.weight`).
  - ip_address: IPv4 dotted quads (each octet <= 255, no leading zeros, checked by `ipaddress`)
    and IPv6 addresses -> `<IP_ADDRESS>`. Following BigCode's StarCoder PII pipeline, only
    addresses that can point at someone's machine are replaced: private, loopback, link-local,
    unspecified, documentation, reserved, multicast and broadcast ranges are kept (127.0.0.0/8,
    0.0.0.0, 10/8, 172.16/12, 192.168/16, 255.255.255.255 ...), as are the well-known public DNS
    resolvers (8.8.8.8, 1.1.1.1 ...) and dotted quads of four single digits (BigCode takes
    "1.2.3.4" for a version number). Version strings with three or five+ parts ("3.11.7",
    "1.2.3.4.5") never match. IPv6 is replaced only in 2000::/3, the only global unicast space
    allocated, which keeps slices such as `a[1::2]` and names such as `Cafe::Bad` intact.

Returns the text and a count per kind of what was replaced (kinds with no match are absent).
Scrubbing is idempotent: scrubbing scrubbed text finds nothing.

Pattern shapes: the token formats are those their issuers document, as collected by the rule
sets of gitleaks (github.com/gitleaks/gitleaks, config/gitleaks.toml) and Yelp's detect-secrets
(its keyword plugin is the model for the password rule and its false-positive filters); the
e-mail and IP address handling follows BigCode's regex PII pipeline for The Stack / StarCoder
(github.com/bigcode-project/bigcode-dataset, pii/), itself adapted from BigScience's, which
validates addresses with `ipaddress` and skips private ones and popular DNS servers. The
placeholders follow StarCoder's (`<EMAIL>`, `<KEY>`, `<PASSWORD>`), one per kind here; BigCode
replaced IP addresses by random private ones instead, which hides that anything was replaced.

Cost: one `re.sub` pass per pattern (IPv4 and IPv6 are two), each written so that no stretch of
text is scanned more than a bounded number of times (runs are only started at their first
character, repetition is bounded or possessive, a key body cannot span another BEGIN line), so
long lines such as "a@a@...", "1.2.3.4...." or "password_password_..." take linear time: about
0.1 s per MB. Matches are only rejected after the fact (by `ipaddress`, the git@ and @2x exceptions,
or a key body without base64) where the rejected span cannot hide another match of its pattern.

Written by hand because detect-secrets and gitleaks scan files for reporting, one plugin or
process at a time, and neither replaces in place; Presidio brings spaCy models for names,
which we do not try to find.

Does not: find names, phone numbers, street addresses or credentials inside URLs; decode base64
or look at entropy; promise to find every secret (nothing regex-based can).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

PLACEHOLDERS = {
    "private_key": "<PRIVATE_KEY>",
    "api_key": "<API_KEY>",
    "password": "<SECRET>",
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
}

# ---------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------

# The body may not contain "-----", so a BEGIN line pairs with the next END line, and each
# character is looked at by one BEGIN at most.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?)-----"
    r"((?:[^-]++|-(?!----))*+)"
    r"-----END \1-----"
)
_KEY_BODY = re.compile(r"[A-Za-z0-9+/]{32}")

_TOKEN_CHAR = "A-Za-z0-9_-"
_API_KEY = re.compile(
    rf"(?<![{_TOKEN_CHAR}])(?:"
    r"(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"  # GitHub personal, OAuth, user-to-server, server-to-server, refresh
    r"|github_pat_[A-Za-z0-9_]{22,255}"  # GitHub fine-grained personal access token
    r"|xox[baprs]-[0-9]{1,13}-[A-Za-z0-9-]{8,255}"  # Slack
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,247}"  # Stripe secret / restricted key
    r"|AIza[A-Za-z0-9_-]{35}"  # Google API key
    rf"|sk-(?=[{_TOKEN_CHAR}]*[0-9])[{_TOKEN_CHAR}]{{20,}}"  # OpenAI-style, sk-proj-... included
    rf"|eyJ[{_TOKEN_CHAR}]{{8,}}\.eyJ[{_TOKEN_CHAR}]{{8,}}\.[{_TOKEN_CHAR}]{{8,}}"  # JSON Web Token
    rf")(?![{_TOKEN_CHAR}])"
)

# Lower-case and capitalized keywords may not run on into a lower-case letter, upper-case ones
# not into an upper-case letter: "tokenizer", "TOKENIZER" and "Secretary" are not secrets' names.
_NAME_LOWER = (r"password|passwd|pwd|secret|token|api[_-]?key|apiKey"
               r"|Password|Passwd|Pwd|Secret|Token|Api[_-]?[Kk]ey|APIKey")
_NAME_UPPER = r"PASSWORD|PASSWD|PWD|SECRET|TOKEN|API[_-]?KEY"
# Every rule is in the pattern, none in Python after it: a match rejected afterwards would still
# have been consumed, hiding a secret inside it. The parts after the keyword are bounded or end
# at the value, so no stretch of text is scanned from more than a few keywords.
_PASSWORD = re.compile(
    rf"(?:(?:{_NAME_LOWER})(?![a-z])|(?:{_NAME_UPPER})(?![A-Z]))[\w-]{{0,40}}+"  # the rest of the name
    r"""["']?\]?"""  # a quoted key, or a subscript: "password": ..., env['TOKEN'] = ...
    r"""(?:[ \t]*:[\w.\[\]| \t]{0,40}+(?==))?"""  # a type annotation: password: str = ...
    r"""[ \t]*(?::=|=>|[:=])[ \t]*(?:[rRbBuU]|@)?"""  # = : := => and a string prefix (not f)
    r"""(?!(?P<q>["'])<[^"'\s]*>(?P=q))"""  # not a placeholder, ours or a template's: "<YOUR_TOKEN>"
    r"""(?!["'](?:[A-Za-z][A-Za-z0-9+.-]*://|\.{0,2}/|~/))"""  # not a URL or a path
    r"""(?!["'][^"'\s]*?(?:\$\{|\{\{|%\(|\#\{))"""  # not a template: ${x} {{x}} %(x)s #{x}
    r"""(?:"((?:[^"\\\s]|\\.){8,}+)"|'((?:[^'\\\s]|\\.){8,}+)')"""  # 8+ characters, no whitespace
)

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w%+-][\w.%+-]{0,63}"  # local part, started at its first character
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"  # domain labels
    r"[^\W\d_]{2,63}(?![\w%+-])"  # top-level domain: letters, not followed by what could start a local part
)

# SSH remotes of every forge (git@github.com:owner/repo.git) and image variants (icon@2x.png).
_NOT_AN_EMAIL = re.compile(r"git@|[^@]+@[1-9]x\.[a-z]+$")

_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![\w]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?(?![\w:]|\.[0-9])"
)
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Public resolvers: in countless configs and docs, and nobody's personal machine (BigCode's list).
WELL_KNOWN_DNS = frozenset({
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222",
    "208.67.220.220", "76.76.19.19", "76.223.122.150", "8.26.56.26", "8.20.247.20", "94.140.14.14", "94.140.15.15",
})


# ---------------------------------------------------------------------------------------------
# Replacers: the replacement for a match, or None to keep it
# ---------------------------------------------------------------------------------------------


def _private_key(m: re.Match) -> str | None:
    return PLACEHOLDERS["private_key"] if _KEY_BODY.search(m.group(2)) else None


def _api_key(m: re.Match) -> str | None:
    return PLACEHOLDERS["api_key"]


def _password(m: re.Match) -> str | None:
    group = 2 if m.group(2) is not None else 3
    start, end = m.span(group)
    whole = m.group(0)
    return whole[: start - m.start()] + PLACEHOLDERS["password"] + whole[end - m.start():]


def _email(m: re.Match) -> str | None:
    return None if _NOT_AN_EMAIL.match(m.group(0)) else PLACEHOLDERS["email"]


def _ipv4(m: re.Match) -> str | None:
    value = m.group(0)
    if value in WELL_KNOWN_DNS or len(value) == 7:  # four single digits: a version, like BigCode
        return None
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:  # an octet over 255, or a leading zero
        return None
    return PLACEHOLDERS["ip_address"] if ip.is_global and not ip.is_multicast else None


def _ipv6(m: re.Match) -> str | None:
    try:
        ip = ipaddress.IPv6Address(m.group(0))
    except ValueError:  # times (12:30:45), MAC addresses, C++ scopes, too many groups
        return None
    return PLACEHOLDERS["ip_address"] if ip in _GLOBAL_UNICAST and ip.is_global else None


# (kind, pattern, replacer, a substring every match holds: the pass is skipped without it)
_RULES: list[tuple[str, re.Pattern, Callable[[re.Match], str | None], str]] = [
    ("private_key", _PRIVATE_KEY, _private_key, "PRIVATE KEY"),
    ("api_key", _API_KEY, _api_key, ""),
    ("password", _PASSWORD, _password, ""),
    ("email", _EMAIL, _email, "@"),
    ("ip_address", _IPV6, _ipv6, ":"),
    ("ip_address", _IPV4, _ipv4, "."),
]


def _substitute(pattern: re.Pattern, replacer: Callable[[re.Match], str | None], text: str) -> tuple[str, int]:
    replaced = 0

    def substitute(m: re.Match) -> str:
        nonlocal replaced
        new = replacer(m)
        if new is None:
            return m.group(0)
        replaced += 1
        return new

    return pattern.sub(substitute, text), replaced


def scrub(text: str) -> tuple[str, dict[str, int]]:
    """`text` with private keys, API keys and tokens, password literals, e-mail addresses and
    public IP addresses replaced by `PLACEHOLDERS`, and how many of each kind were replaced
    (kinds without any are absent). Idempotent; text around each match is kept as it was."""
    counts: dict[str, int] = {}
    for kind, pattern, replacer, needle in _RULES:
        if needle not in text:
            continue
        text, replaced = _substitute(pattern, replacer, text)
        if replaced:
            counts[kind] = counts.get(kind, 0) + replaced
    return text, counts
