"""Secrets and personal data scrubbing: `scrub(text)` replaces what it finds by placeholders.

Kinds, in the order they are replaced (a key inside a password literal counts as a key), with
their placeholders (`PLACEHOLDERS`):
  - private_key: a PEM, OpenSSH or OpenPGP private-key block (RSA, EC, DSA, OPENSSH, ENCRYPTED,
    PGP ... or plain "PRIVATE KEY") -> `<PRIVATE_KEY>`, armor lines, headers (Proc-Type, DEK-Info,
    Version ...) and OpenPGP's checksum line included. Either armor line is enough: the body of
    base64 lines is replaced when the line above it or the line below it names a private key,
    even if the other one has a word misspelt, names another kind of key or is missing. The
    body must hold a run of 32+ base64 characters, so code that merely names the BEGIN and END
    lines (a parser, a test) is left alone. Lines may be broken for real or by escaped \n in a
    string (a Google service-account JSON file), indented, commented (# // * > ;) or be
    string literals joined by + or ,. Also a whole PEM file encoded in base64 again (the
    `LS0tLS1CRUdJTi...` of Kubernetes secrets) when it decodes to a private key.
  - base64_block: a block known by its shape alone, as an encoder writes it: 3+ lines of base64,
    all but the last of one width of 40+ characters (PEM and OpenPGP write 64, RFC 7468; OpenSSH
    70; MIME 76, RFC 2045), the last no wider, = padding only at its end, with upper- and
    lower-case letters and digits in it (which hexadecimal digests, DNA and base32 lack) ->
    `<BASE64_BLOCK>`. Unless its armor says it is public: certificates, public keys, CRLs,
    signatures and messages (RFC 7468's and OpenPGP's labels, either armor line intact) are not
    secrets and are kept, whatever their shape. A block without armor cannot be told from key
    material, so it goes, a certificate's body too: it is key material or encoded binary data,
    neither of which is training text; it is counted apart from private keys because nothing
    says it is one.
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
0.1 s per MB. Blocks: one scan for runs of 32+ base64 characters, then, from each, a walk over
the lines that follow (each line once) and back over at most 9 lines for its armor. Matches are
only rejected after the fact (by `ipaddress`, the git@ and @2x exceptions, or a key body without
base64) where the rejected span cannot hide another match of its pattern; a block that is kept
hides nothing either, since blocks are decided one by one from the lines they are made of.

Written by hand because detect-secrets and gitleaks scan files for reporting, one plugin or
process at a time, and neither replaces in place; Presidio brings spaCy models for names,
which we do not try to find.

Does not: find names, phone numbers, street addresses or credentials inside URLs; decode base64
(beyond the first bytes of a `LS0tLS1CRUdJTi` run) or look at entropy; know a key by shape when
it has fewer than 3 lines (an Ed25519 PKCS#8 key is one line of 64) and neither armor line names
it; promise to find every secret (nothing regex-based can).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable

PLACEHOLDERS = {
    "private_key": "<PRIVATE_KEY>",
    "base64_block": "<BASE64_BLOCK>",
    "api_key": "<API_KEY>",
    "password": "<SECRET>",
    "email": "<EMAIL>",
    "ip_address": "<IP_ADDRESS>",
}

# ---------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------

# The body may not contain "-----", so a BEGIN line pairs with the next END line, and each
# character is looked at by one BEGIN at most. The END line may name another kind of private key.
_PRIVATE_LABEL = r"(?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?"
_PRIVATE_KEY = re.compile(
    rf"-----BEGIN {_PRIVATE_LABEL}-----"
    r"((?:[^-]++|-(?!----))*+)"
    rf"-----END {_PRIVATE_LABEL}-----"
)
_KEY_BODY = re.compile(r"[A-Za-z0-9+/]{32}")

# Blocks of base64 lines, whatever their armor (`_key_blocks`). A "chunk" is one line's base64,
# the whole of its line; "glue" is what separates two lines of one block: a line break (real or
# an escaped \n in a string literal), indentation, a comment marker, or the quotes and + or ,
# between string literals that continue each other.
_B64 = "A-Za-z0-9+/"
# a chunk starts after what is not base64, after armor, or after an escaped line break (whose n starts none)
_LINE_STARTS = rf"(?:(?<![{_B64}=_\\-])|(?<=-----)|(?<=\\[nr]))"
_LINE_ENDS = r"""(?=[ \t]*+(?:\r?\n|\Z)|(?:\\r)?\\n|["'`]|-----|\Z)"""
_WIDE_CHUNK = re.compile(rf"{_LINE_STARTS}[{_B64}]{{32,}}+={{0,2}}+{_LINE_ENDS}")
_B64_RUN = re.compile(rf"[{_B64}]{{32,}}")  # found first: a scan for a plain class is several times faster
_COMMENT = r"(?:(?:[#>*;]|//)[ \t]++)?"
_GLUE = (r"""(?:\\r)?\\n(?:["'`][ \t]*+[+,]?[ \t]*+\r?\n[ \t]*+(?:\+[ \t]*+)?["'`])?"""  # escaped, maybe "\n" + "
         rf"""|["'`]?[ \t]*+[+,]?[ \t]*+\r?\n[ \t]*+{_COMMENT}(?:\+?[ \t]*+["'`])?""")  # a real line break
_NEXT_CHUNK = re.compile(rf"(?:{_GLUE})([{_B64}]++={{0,2}}+){_LINE_ENDS}")
_ARMOR = r"""-{3,}+ *+([A-Za-z0-9][^-\r\n\\"'`]{0,60}+)-{3,}+"""  # edited or not: -----BEGIN RSA PRIVTE KEY-----
_ARMOR_ENDS_LINE = re.compile(rf"""(?<!-){_ARMOR}[ \t"'`]*+\Z""")
_ARMOR_NEXT = re.compile(rf"""(?:{_GLUE})?(?:=[{_B64}]{{4}}(?:{_GLUE}))?[ \t"'`]*+{_ARMOR}""")  # after a PGP checksum
_HEADER_OR_BLANK = re.compile(  # Proc-Type: 4,ENCRYPTED
    rf"""[ \t"'`+,]*+{_COMMENT}(?:[A-Za-z][A-Za-z0-9-]{{0,30}}+:[ \t][^\r\n]{{0,200}}+)?[ \t"'`+,]*+""")
_LINE_PREFIX = re.compile(rf"""[ \t"'`+,]*+{_COMMENT}[ \t"'`]*+""")
_PUBLIC_LABEL = re.compile(  # RFC 7468's labels for what is not secret, and OpenPGP's and RFC 4716's
    r"(?:BEGIN|END) (?:[A-Z0-9]+ ){0,3}"
    r"(?:CERTIFICATE|CERTIFICATE REQUEST|CRL|PKCS7|CMS|PUBLIC KEY|PUBLIC KEY BLOCK|SIGNATURE|MESSAGE|PARAMETERS) ?"
)
_ENCODED_PEM = "LS0tLS1CRUdJTi"  # base64 of "-----BEGIN ": a whole PEM file encoded again (Kubernetes secrets)
_LOOKBACK = 1024  # characters before a block searched for its BEGIN line and headers
_HEADER_LINES = 8  # PEM's Proc-Type and DEK-Info (RFC 1421), OpenPGP's Version, Comment, Hash ...
_MIN_BLOCK_LINES = 3  # a block known by its shape alone: two full lines and the last
_MIN_BLOCK_WIDTH = 40
_MIXED = [re.compile("[A-Z]"), re.compile("[a-z]"), re.compile("[0-9]")]  # all in random base64 of 3+ lines

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
    return PLACEHOLDERS["private_key"] if _KEY_BODY.search(m.group(1)) else None


def _key_blocks(text: str) -> tuple[str, dict[str, int]]:
    """Replaces blocks of base64 lines that are key material, known by either armor line or by
    their shape (see the module docstring); returns the text and the count per kind."""
    spans: list[tuple[int, int, str]] = []
    floor = 0  # where the block replaced last ended: no block looks back past it
    pos = 0
    while (run := _B64_RUN.search(text, pos)) is not None:
        start = run.start()
        start += start > 0 and text[start - 1] == "\\" and text[start] in "nr"  # the n of an escaped \n
        first = _WIDE_CHUNK.match(text, start)
        if first is None:
            pos = run.end()
            continue
        chunks = [first.span()]
        while (nxt := _NEXT_CHUNK.match(text, chunks[-1][1])) is not None:
            chunks.append(nxt.span(1))
        segments = _segments(text, chunks)
        for i, segment in enumerate(segments):
            opener = _opener(text, segment[0][0], floor) if i == 0 else None
            closer = _closer(text, segment[-1][1]) if i == len(segments) - 1 else None
            kind = _block_kind(text, segment, [a[2] for a in (opener, closer) if a])
            if kind is not None:
                start = opener[0] if opener else segment[0][0]
                end = closer[1] if closer else segment[-1][1]
                spans.append((start, end, kind))
                floor = end
        pos = max(floor, closer[1] if closer else chunks[-1][1])
    if not spans:
        return text, {}
    out, counts, last = [], {}, 0
    for start, end, kind in spans:
        out += [text[last:start], PLACEHOLDERS[kind]]
        counts[kind] = counts.get(kind, 0) + 1
        last = end
    out.append(text[last:])
    return "".join(out), counts


def _segments(text: str, chunks: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Splits a run of lines into blocks shaped like an encoder's output: lines of one width,
    then one last line no wider (the only one that may end in = padding)."""
    segments, i = [], 0
    while i < len(chunks):
        width = chunks[i][1] - chunks[i][0]
        j = i
        while text[chunks[j][1] - 1] != "=" and j + 1 < len(chunks):
            following = chunks[j + 1][1] - chunks[j + 1][0]
            if following > width:
                break
            j += 1
            if following < width:
                break
        segments.append(chunks[i:j + 1])
        i = j + 1
    return segments


def _opener(text: str, start: int, floor: int) -> tuple[int, int, str] | None:
    """(start, end, label) of the armor line above a block's first line (headers and blank lines
    may stand between), unless it is an END line (of the block before). Walks back a bounded
    number of lines, never past `floor` (where the block replaced last ended)."""
    low = max(floor, start - _LOOKBACK)
    end = start
    for n in range(_HEADER_LINES + 2):
        before, begin = _line_break_before(text, low, end)
        armor = _ARMOR_ENDS_LINE.search(text, max(begin, end - 100), end)  # armor is short and ends its line
        if armor is not None:
            label = armor.group(1).strip()
            return None if "END" in label.split() else (armor.start(), armor.end(), label)
        if begin == low or not (_LINE_PREFIX if n == 0 else _HEADER_OR_BLANK).fullmatch(text, begin, end):
            return None
        end = before
    return None


def _line_break_before(text: str, low: int, end: int) -> tuple[int, int]:
    """(start, end) of the last line break, real or escaped, in `text[low:end]`; (low, low) if none."""
    real = text.rfind("\n", low, end)
    escaped = text.rfind("\\n", max(real, low), end)  # only where it would come after the real one
    if real < 0 and escaped < 0:
        return low, low
    if real > escaped:
        return (real - 1 if real > low and text[real - 1] == "\r" else real), real + 1
    return (escaped - 2 if escaped - 2 >= low and text.startswith("\\r", escaped - 2) else escaped), escaped + 2


def _closer(text: str, end: int) -> tuple[int, int, str] | None:
    """(start, end, label) of the armor line after a block's last line (after OpenPGP's
    checksum line, if any), unless it is a BEGIN line (of the block after)."""
    armor = _ARMOR_NEXT.match(text, end)
    if armor is None:
        return None
    label = armor.group(1).strip()
    return None if "BEGIN" in label.split() else (armor.start(), armor.end(), label)


def _block_kind(text: str, segment: list[tuple[int, int]], labels: list[str]) -> str | None:
    widths = [b - a for a, b in segment]
    if text.startswith(_ENCODED_PEM, segment[0][0]) and b"PRIVATE KEY" in _decoded_head(text, segment[0]):
        return "private_key"
    if any("PRIVATE" in label for label in labels):
        return "private_key" if max(widths) >= 32 else None
    if any(_PUBLIC_LABEL.fullmatch(label) for label in labels):
        return None  # a certificate or public key, which are meant to be seen
    if len(segment) < _MIN_BLOCK_LINES or widths[0] < _MIN_BLOCK_WIDTH:
        return None
    body = "".join(text[a:b] for a, b in segment)
    if not all(letters.search(body) for letters in _MIXED):
        return None  # hexadecimal digests, DNA, base32: not what a base64 encoder writes
    return "base64_block"


def _decoded_head(text: str, chunk: tuple[int, int]) -> bytes:
    """The first bytes a chunk's base64 stands for (b"" if they are not valid base64)."""
    head = text[chunk[0]:min(chunk[1], chunk[0] + 64)]
    try:
        return base64.b64decode(head[: len(head) // 4 * 4], validate=True)
    except ValueError:
        return b""


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
        if needle in text:
            text, replaced = _substitute(pattern, replacer, text)
            if replaced:
                counts[kind] = counts.get(kind, 0) + replaced
        if kind == "private_key":  # then the blocks whose armor is damaged or missing
            text, found = _key_blocks(text)
            for block_kind, n in found.items():
                counts[block_kind] = counts.get(block_kind, 0) + n
    return text, counts
