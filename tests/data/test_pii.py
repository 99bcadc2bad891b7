import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.data.pii import PLACEHOLDERS, scrub

# Tokens and keys are put together at run time so that this file holds no string a secret
# scanner (GitHub push protection, gitleaks) would flag; none of them is real.


def rand62(n: int, seed: str = "") -> str:
    """n deterministic characters from [A-Za-z0-9], at least one a digit."""
    digest = hashlib.sha256(seed.encode()).digest() * (n // 32 + 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return ("7" + "".join(alphabet[b % 62] for b in digest))[:n]


def pem(kind: str, body_lines: int = 6, width: int = 64) -> str:
    body = base64.b64encode(hashlib.sha512(kind.encode()).digest() * 8).decode()
    lines = [body[i * width:(i + 1) * width] for i in range(body_lines)]
    return "\n".join(["-----BEGIN " + kind + "-----", *lines, "-----END " + kind + "-----"])


B64 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
JWT = B64 + "." + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ" + "." + rand62(43, "jwt")

API_KEYS = {
    "aws": "AKIA" + "IOSFODNN7EXAMPLE",
    "aws sts": "ASIA" + rand62(16, "sts").upper(),
    "github ghp": "ghp" + "_" + rand62(36, "p"),
    "github gho": "gho" + "_" + rand62(36, "o"),
    "github ghu": "ghu" + "_" + rand62(36, "u"),
    "github ghs": "ghs" + "_" + rand62(36, "s"),
    "github ghr": "ghr" + "_" + rand62(36, "r"),
    "github fine-grained": "github" + "_pat_" + "11A" + rand62(19, "a") + "_" + rand62(59, "b"),
    "slack bot": "xoxb" + "-123456789012-1234567890123-" + rand62(24, "slack"),
    "slack user": "xoxp" + "-1234567890-1234567890-1234567890-" + rand62(32, "user"),
    "stripe live": "sk" + "_live_" + rand62(24, "sl"),
    "stripe test": "sk" + "_test_" + rand62(24, "st"),
    "stripe restricted": "rk" + "_live_" + rand62(24, "rl"),
    "google": "AIza" + "Sy" + rand62(28, "g") + "-_abc",
    "openai": "sk" + "-" + rand62(48, "oa"),
    "openai project": "sk" + "-proj-" + rand62(40, "p1") + "-" + rand62(30, "p2") + "_" + rand62(20, "p3"),
    "jwt": JWT,
}

POSITIVES = [  # (kind, the secret as it stands in the text)
    ("email", "jane.doe@example.com"),
    ("email", "bob+newsletter@mail.co.uk"),
    ("email", "x_y-z.0@sub.domain-name.org"),
    ("email", "josé.garcía@correo.es"),
    ("email", "JANE@EXAMPLE.COM"),
    ("ip_address", "93.184.216.34"),
    ("ip_address", "151.101.1.69"),
    ("ip_address", "2606:4700:4700::1111"),
    ("ip_address", "2a00:1450:4001:81c::200e"),
    ("ip_address", "2001:4860:4860:0:0:0:0:8888"),
    *[("private_key", pem(k)) for k in [
        "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY", "PGP PRIVATE KEY BLOCK",
    ]],
    *[("api_key", key) for key in API_KEYS.values()],
]


@pytest.mark.parametrize("kind, secret", POSITIVES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(POSITIVES)])
@pytest.mark.parametrize("before, after", [("", ""), ("contact: ", ".\nnext line"), ("(", ")"), ('"', '",'),
                                            ("<td>", "</td>")])
def test_each_kind_is_replaced_and_its_surroundings_kept(kind, secret, before, after):
    text = f"{before}{secret}{after}"
    assert scrub(text) == (f"{before}{PLACEHOLDERS[kind]}{after}", {kind: 1})


def test_counts_are_per_kind():
    text = (
        "Mail jane@example.com or ops@corp.io from 203.0.113.7 / 93.184.216.34.\n"
        + pem("RSA PRIVATE KEY") + "\n"
        + f"aws = {API_KEYS['aws']}\ngh = {API_KEYS['github ghp']}\n"
        + f'headers = {{"Authorization": "Bearer {JWT}"}}\n'
        + 'db_password = "correct-horse-battery"\n'
    )
    scrubbed, counts = scrub(text)
    assert counts == {"email": 2, "ip_address": 1, "private_key": 1, "api_key": 3, "password": 1}
    assert "203.0.113.7" in scrubbed  # a documentation address
    assert 'db_password = "<SECRET>"' in scrubbed and "Bearer <API_KEY>" in scrubbed
    assert scrub("nothing to see here") == ("nothing to see here", {})


# ---------------------------------------------------------------------------------------------
# e-mail addresses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ssh user@localhost",  # no dot in the domain: a local account, not an address
        "postgres://admin@db:5432",
        "@decorator\ndef f(): pass",
        "a@b",
        "x@y.c",  # a one-letter top-level domain
        "v@1.2.3",
        "git clone git@github.com:owner/repo.git",  # an SSH remote
        "background: url(icon@2x.png)",  # an image variant
        "user@@example.com",
        "name@.com",
    ],
)
def test_text_that_is_not_an_email_is_kept(text):
    assert scrub(text) == (text, {})


def test_email_boundaries():
    assert scrub("jane@example.com.") == ("<EMAIL>.", {"email": 1})
    assert scrub("<jane@example.com>") == ("<<EMAIL>>", {"email": 1})
    assert scrub("a@b.co,c@d.co") == ("<EMAIL>,<EMAIL>", {"email": 2})
    assert scrub("jane@example.com2") == ("jane@example.com2", {})


# ---------------------------------------------------------------------------------------------
# IP addresses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, replaced",
    [
        ("9.255.255.255", True), ("10.0.0.0", False), ("10.255.255.255", False), ("11.0.0.0", True),
        ("126.255.255.255", True), ("127.0.0.1", False), ("127.255.255.255", False), ("128.0.0.1", True),
        ("172.15.255.255", True), ("172.16.0.0", False), ("172.31.255.255", False), ("172.32.0.0", True),
        ("192.167.255.255", True), ("192.168.0.0", False), ("192.168.255.255", False), ("192.169.0.0", True),
        ("0.0.0.0", False), ("255.255.255.255", False), ("169.254.1.1", False), ("224.0.0.251", False),
        ("192.0.2.10", False), ("198.51.100.10", False), ("203.0.113.10", False),  # documentation
        ("8.8.8.8", False), ("1.1.1.1", False), ("208.67.222.222", False),  # public DNS resolvers
        ("1.2.3.4", False), ("2.7.1.0", False),  # four single digits: a version number
        ("23.1.1.1", True),
        ("256.1.1.1", False), ("1.2.3.256", False), ("01.2.3.44", False),  # not valid addresses
    ],
)
def test_ipv4_public_addresses_only(address, replaced):
    expected = ("at <IP_ADDRESS>.", {"ip_address": 1}) if replaced else (f"at {address}.", {})
    assert scrub(f"at {address}.") == expected


@pytest.mark.parametrize(
    "text",
    [
        "Python 3.11.7", "version 1.2.3.4.5", "v93.184.216.34", "93.184.216.34.5", "1.93.184.216.34",
        "10.0.19041.1", "build 6.1.7601.17514", "93.184.216", "x93.184.216.34", "93.184.216.34x",
    ],
)
def test_version_like_strings_are_kept(text):
    assert scrub(text) == (text, {})


@pytest.mark.parametrize(
    "text",
    [
        "::1", "::", "fe80::1%eth0", "fd12:3456:789a::1", "2001:db8::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.168.1.1", "ff02::1",
        "a[1::2]", "x = y[::3]", "Cafe::Bad", "std::vector<int>", "at 12:30:45", "mac 00:1A:2B:3C:4D:5E",
        "1:2:3:4:5:6:7:8:9", "2606:4700:4700::11111",
    ],
)
def test_ipv6_non_global_and_lookalikes_are_kept(text):
    assert scrub(text) == (text, {})


def test_ipv6_with_embedded_ipv4_and_in_urls():
    assert scrub("http://[2606:4700::6810:84e5]:443/") == ("http://[<IP_ADDRESS>]:443/", {"ip_address": 1})
    assert scrub("::ffff:93.184.216.34") == ("::ffff:<IP_ADDRESS>", {"ip_address": 1})


# ---------------------------------------------------------------------------------------------
# private keys
# ---------------------------------------------------------------------------------------------


def test_private_key_inside_a_string_literal():
    key = pem("RSA PRIVATE KEY").replace("\n", "\\n")
    assert scrub(f'KEY = "{key}"\nx = 1') == ('KEY = "<PRIVATE_KEY>"\nx = 1', {"private_key": 1})


def test_encrypted_pem_with_headers():
    lines = pem("RSA PRIVATE KEY").split("\n")
    key = "\n".join([lines[0], "Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,0123456789ABCDEF", "", *lines[1:]])
    assert scrub(key) == ("<PRIVATE_KEY>", {"private_key": 1})


@pytest.mark.parametrize(
    "text",
    [
        pem("PUBLIC KEY"),
        pem("RSA PUBLIC KEY"),
        pem("CERTIFICATE"),
        pem("OPENSSH PRIVATE KEY").replace("-----END OPENSSH", "-----END RSA"),  # mismatched END
        pem("RSA PRIVATE KEY").rsplit("\n", 1)[0],  # no END line
        # code that names the lines without a key between them
        'BEGIN = "-----BEGIN RSA ' + 'PRIVATE KEY-----"\nEND = "-----END RSA ' + 'PRIVATE KEY-----"\n',
        "-----BEGIN EC " + "PRIVATE KEY-----\n...\n-----END EC " + "PRIVATE KEY-----",  # elided in docs
    ],
)
def test_public_keys_and_non_keys_are_kept(text):
    assert scrub(text) == (text, {})


def test_two_keys_and_text_between_them():
    text = pem("EC PRIVATE KEY") + "\nsome text\n" + pem("PRIVATE KEY")
    assert scrub(text) == ("<PRIVATE_KEY>\nsome text\n<PRIVATE_KEY>", {"private_key": 2})


# ---------------------------------------------------------------------------------------------
# API keys and tokens
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "task-list", "disk-" + rand62(30, "d"), "task-" + rand62(24, "t"),  # "sk-" inside a word
        "sk-learn-compatible-estimator",  # no digit: a name, not a key
        "sk-" + rand62(19, "short"),  # one character too short
        "AKIA" + "IOSFODNN7EXAMPL",  # 15 characters after the prefix
        "AKIA" + "IOSFODNN7EXAMPLEX",  # 17: part of something longer
        "XAKIA" + "IOSFODNN7EXAMPLE",
        "ghp" + "_" + rand62(35, "g"),
        "ghx" + "_" + rand62(36, "g"),
        "sk" + "_live_" + "short",
        "xoxb" + "-your-token-here",
        "AIza" + rand62(34, "g"),
        B64,  # one JSON object encoded, not a token
        B64 + "." + B64,
    ],
)
def test_lookalikes_are_not_api_keys(text):
    assert scrub(text) == (text, {})


def test_api_key_boundaries():
    key = API_KEYS["aws"]
    assert scrub(f"AWS_ACCESS_KEY_ID={key}\n") == ("AWS_ACCESS_KEY_ID=<API_KEY>\n", {"api_key": 1})
    assert scrub(f"'{key}','{key}'") == ("'<API_KEY>','<API_KEY>'", {"api_key": 2})
    assert scrub(f"Authorization: Bearer {JWT}") == ("Authorization: Bearer <API_KEY>", {"api_key": 1})


# ---------------------------------------------------------------------------------------------
# passwords and secrets assigned in code and config
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('password = "hunter2hunter2"', 'password = "<SECRET>"'),
        ("password='12345678'", "password='<SECRET>'"),  # exactly 8 characters
        ('DB_PASSWORD="s3cr3t-pass"', 'DB_PASSWORD="<SECRET>"'),
        ('self.passwd = "p@ssw0rd!!"', 'self.passwd = "<SECRET>"'),
        ('pwd := "0123456789"', 'pwd := "<SECRET>"'),
        ('"client_secret": "abc123def456"', '"client_secret": "<SECRET>"'),
        ("SECRET_KEY = 'django-insecure-abc123'", "SECRET_KEY = '<SECRET>'"),
        ("secretKey: 'abcdefgh12'", "secretKey: '<SECRET>'"),
        ('apiKey: "0123456789abcdef"', 'apiKey: "<SECRET>"'),
        ('api-key: "0123456789abcdef"', 'api-key: "<SECRET>"'),
        ("'api_key' => 'abcdefghijkl'", "'api_key' => '<SECRET>'"),
        ('os.environ["GITHUB_TOKEN"] = "not-a-real-one"', 'os.environ["GITHUB_TOKEN"] = "<SECRET>"'),
        ('access_token = r"ab\\cd\\ef\\gh\\ij"', 'access_token = r"<SECRET>"'),
        ('password: str = "hunter2hunter2"', 'password: str = "<SECRET>"'),
        ('token = "ab\\"cdefgh"', 'token = "<SECRET>"'),  # an escaped quote inside
        ('Password = @"abcdefgh1"', 'Password = @"<SECRET>"'),
        ('auth_token="aaaaaaaa" # and more', 'auth_token="<SECRET>" # and more'),
    ],
)
def test_password_literals_are_replaced_and_only_the_literal(text, expected):
    assert scrub(text) == (expected, {"password": 1})


@pytest.mark.parametrize(
    "text",
    [
        'password = "x"',
        'password = "1234567"',  # 7 characters
        'password = ""',
        "password = get_password()",
        "password = os.environ['DB_PASSWORD']",
        'password = f"{user}-{suffix}-pass"',  # an f-string is a template
        'password = "${DB_PASSWORD}"',
        'password = "{{ vault.db_password }}"',
        'password = "%(password)s1234"',
        'password = "<YOUR_PASSWORD>"',
        'if password == "hunter2hunter2":',  # a comparison, not an assignment
        'PASSWORD_PROMPT = "Enter your password:"',  # prose
        'TOKEN_URL = "https://oauth2.googleapis.com/token"',
        'token_file = "/etc/app/token.json"',
        'token_file = "~/.config/token"',
        'tokenizer = "bert-base-uncased"',
        'TOKENIZER = "bert-base-uncased"',
        'Tokenizer = "bert-base-uncased"',
        'secretary = "JaneDoeSmith"',
        'username = "janedoe1234"',
        'password = "unterminated',
        'password = "two\nlines here"',
    ],
)
def test_non_secrets_are_kept(text):
    assert scrub(text) == (text, {})


# ---------------------------------------------------------------------------------------------
# Idempotence and pathological input
# ---------------------------------------------------------------------------------------------

FRAGMENTS = [secret for _, secret in POSITIVES] + [
    'password = "hunter2hunter2"', 'token: "', '"', "'", "=", " ", "\n", ".", ":", "@", "-", "_", "::",
    "192.168.1.1", "1.2.3", "example.com", "sk-", "xoxb-1-", "eyJ", "-----BEGIN RSA PRIVATE KEY-----",
    "git@", "@2x.png", "::ffff:", "2606:4700::1", "env['TOKEN']", ": str = ", "=>", "${", "https://",
    "-----END RSA PRIVATE KEY-----", "A" * 32, *PLACEHOLDERS.values(),
]


@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet="ab19fFé.:@-_=%+'\" \n<>[]\\$/", max_size=6)),
                max_size=12))
def test_scrub_is_idempotent(pieces):
    # also where a placeholder now stands next to what used to be part of a match
    once, _ = scrub("".join(pieces))
    assert scrub(once) == (once, {})


@given(st.text())
def test_scrub_never_changes_text_without_a_match(text):
    scrubbed, counts = scrub(text)
    assert (scrubbed == text) == (not counts)


@pytest.mark.parametrize(
    "text",
    [
        "a@" * 500_000,  # 1 MB
        "1.2.3.4." * 125_000,
        ".".join(str(i % 1000) for i in range(250_000)),
        "x@" + "ab." * 333_333,
        "ab::" * 250_000,
        "sk-" * 333_333,
        'password = "' * 100_000,
        "-----BEGIN RSA PRIVATE KEY-----" * 30_000,
        "eyJ" * 333_333,
        "password_" * 111_111,  # each keyword would rescan the rest of one long name
        'token="' + "x" * 1_000_000,  # an unterminated literal
    ],
    ids=["a@", "digits-dots", "numbers-dots", "long-domain", "colons", "sk-", "password", "begin", "eyJ",
         "long-name", "unterminated"],
)
def test_long_adversarial_lines_complete(text):
    scrubbed, _ = scrub(text)  # no timing assertion: a quadratic pattern would not finish
    assert len(scrubbed) > 0
