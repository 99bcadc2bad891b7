import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

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
        pem("CERTIFICATE").replace("BEGIN CERT", "BEGIN CRET"),  # the intact END line says what it is
        pem("PGP PUBLIC KEY BLOCK").rsplit("\n", 1)[0],  # the intact BEGIN line says what it is
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
# private keys whose armor is damaged or missing, and blocks of base64 lines
# ---------------------------------------------------------------------------------------------


def body_lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if len(line) >= 16 and "-----" not in line and ":" not in line]


def damaged(block: str, line: int, word: str, edit: str) -> str:
    lines = block.rstrip("\n").split("\n")
    lines[line] = lines[line].replace(word, edit, 1)
    assert lines != block.rstrip("\n").split("\n")
    return "\n".join(lines)


ARMOR_VARIANTS = {  # one armor line intact, the other damaged, missing or naming another key
    "BEGIN: a word misspelt": lambda k: damaged(k, 0, "PRIVATE", "PRIVTE"),
    "BEGIN: BEGIN misspelt": lambda k: damaged(k, 0, "BEGIN", "BEGN"),
    "BEGIN: a stray character": lambda k: damaged(k, 0, "KEY", "KEY."),
    "BEGIN: missing": lambda k: k.split("\n", 1)[1],
    "END: a word misspelt": lambda k: damaged(k, -1, "PRIVATE", "PRIVTE"),
    "END: missing": lambda k: k.rstrip("\n").rsplit("\n", 1)[0],
    "END: another kind": lambda k: damaged(k, -1, "-----END ", "-----END EC "),
}


@pytest.mark.parametrize("variant", ARMOR_VARIANTS, ids=list(ARMOR_VARIANTS))
@pytest.mark.parametrize("kind", ["RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY", "PGP PRIVATE KEY BLOCK"])
def test_private_key_with_one_armor_line_intact(kind, variant):
    text = ARMOR_VARIANTS[variant](pem(kind))
    assert scrub(f"key:\n{text}\nThat was it.") == ("key:\n<PRIVATE_KEY>\nThat was it.", {"private_key": 1})


@pytest.mark.parametrize("width", [64, 70, 76])  # PEM and OpenPGP, OpenSSH, MIME
def test_a_block_of_base64_lines_without_armor_is_replaced(width):
    body = "\n".join(body_lines(pem("PRIVATE KEY", body_lines=5, width=width))) + "\n" + "QUJD" + "RA=="
    assert scrub(f"data:\n{body}\nend") == ("data:\n<BASE64_BLOCK>\nend", {"base64_block": 1})
    both_damaged = pem("RSA PRIVATE KEY", width=width).replace("PRIVATE", "PRIVTE")
    assert scrub(both_damaged) == ("<BASE64_BLOCK>", {"base64_block": 1})


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(8)),  # digests, one per line
        json.dumps({"sha256": "\n".join(hashlib.sha256(str(i).encode()).hexdigest().upper() for i in range(8))}),
        "\n".join("ACGT"[i % 4] * 3 + "GATTACA" * 9 for i in range(8)),  # a FASTA sequence
        "\n".join(["/" * 78] * 4),  # comment rules
        "\n".join(base64.b32encode(hashlib.sha512(str(i).encode()).digest()).decode()[:64] for i in range(5)),
        "\n".join(body_lines(pem("PRIVATE KEY", body_lines=2))),  # two lines: not yet a block
        "\n".join(body_lines(pem("PRIVATE KEY", body_lines=4, width=32))),  # too narrow for an encoder's lines
        "\n".join(body_lines(pem("PRIVATE KEY", body_lines=6)))[:-1].replace("\n", "=\n"),  # padding on every line
    ],
    ids=["hex", "hex-in-json", "dna", "slashes", "base32", "two-lines", "narrow", "padded"],
)
def test_blocks_that_are_not_base64_output_are_kept(text):
    assert scrub(text) == (text, {})


def test_private_key_in_json_with_escaped_line_breaks():
    # a Google service-account file holds its key in one string, line breaks written \n
    key = damaged(pem("PRIVATE KEY"), 0, "PRIVATE", "PRIVTE")
    text = json.dumps({"type": "service_account", "private_key": key + "\n", "client_id": "1234"})
    assert scrub(text) == ('{"type": "service_account", "private_key": "<PRIVATE_KEY>\\n", "client_id": "1234"}',
                           {"private_key": 1})


def test_private_key_in_concatenated_string_literals_and_indented_yaml():
    key = damaged(pem("EC PRIVATE KEY"), -1, "EC", "CE")
    python = "KEY = (\n" + "".join(f'    "{line}\\n"\n' for line in key.split("\n")) + ")\n"
    assert scrub(python) == ('KEY = (\n    "<PRIVATE_KEY>\\n"\n)\n', {"private_key": 1})
    javascript = "const key =\n" + " +\n".join(f"  '{line}\\n'" for line in key.split("\n")) + ";\n"
    assert scrub(javascript) == ("const key =\n  '<PRIVATE_KEY>\\n';\n", {"private_key": 1})
    yaml = "tls:\n  key: |\n" + "".join(f"    {line}\n" for line in key.split("\n")) + "  port: 443\n"
    assert scrub(yaml) == ("tls:\n  key: |\n    <PRIVATE_KEY>\n  port: 443\n", {"private_key": 1})


def test_private_key_encoded_again_in_base64():
    # Kubernetes secrets hold whole PEM files base64-encoded, on one line
    key = base64.b64encode(pem("RSA PRIVATE KEY").encode()).decode()
    cert = base64.b64encode(pem("CERTIFICATE").encode()).decode()
    text = f"data:\n  tls.key: {key}\n  tls.crt: {cert}\n"
    assert scrub(text) == (f"data:\n  tls.key: <PRIVATE_KEY>\n  tls.crt: {cert}\n", {"private_key": 1})


def test_a_key_beside_a_certificate():
    text = pem("CERTIFICATE") + "\n" + damaged(pem("PRIVATE KEY"), 0, "PRIVATE", "PRIVTE") + "\n" + pem("CERTIFICATE")
    assert scrub(text) == (pem("CERTIFICATE") + "\n<PRIVATE_KEY>\n" + pem("CERTIFICATE"), {"private_key": 1})


# Real keys and certificates, made here by the tools that make them in the wild.


def _run(*args: str, cwd: Path, env: dict | None = None) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("keys")
    made = {}
    if shutil.which("openssl"):
        _run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem", cwd=d)
        _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem", cwd=d)
        _run("openssl", "genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem", cwd=d)
        _run("openssl", "genpkey", "-algorithm", "RSA", "-aes-128-cbc", "-pass", "pass:x", "-out", "pkcs8-enc.pem",
             cwd=d)
        _run("openssl", "req", "-x509", "-key", "rsa.pem", "-subj", "/CN=loom-test", "-days", "1", "-out", "cert.pem",
             cwd=d)
        _run("openssl", "pkey", "-in", "rsa.pem", "-pubout", "-out", "public.pem", cwd=d)
        try:  # the older format with Proc-Type and DEK-Info headers
            _run("openssl", "rsa", "-in", "rsa.pem", "-aes128", "-passout", "pass:x", "-traditional", "-out",
                 "rsa-enc-traditional.pem", cwd=d)
        except subprocess.CalledProcessError:
            pass
    if shutil.which("ssh-keygen"):
        for kind in ("ed25519", "rsa"):
            _run("ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "loom-test", "-f", f"ssh-{kind}", cwd=d)
        (d / "ssh2-rsa.pub").write_bytes(subprocess.run(["ssh-keygen", "-e", "-f", "ssh-rsa.pub"], cwd=d, check=True,
                                                        capture_output=True, timeout=120).stdout)  # RFC 4716
    if shutil.which("gpg"):
        home = d / "gnupg"
        home.mkdir(mode=0o700)
        env = {**os.environ, "GNUPGHOME": str(home)}
        _run("gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Loom Test <t@example.org>", "ed25519", "sign",
             "never", cwd=d, env=env)
        for what, name in (("--export-secret-keys", "pgp-private.asc"), ("--export", "pgp-public.asc")):
            out = subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--armor",
                                  what], cwd=d, env=env, check=True, capture_output=True, timeout=120).stdout
            (d / name).write_bytes(out)
    for path in sorted(d.iterdir()):
        if path.is_file():
            made[path.name] = path.read_text()
    return made


PRIVATE = ["rsa.pem", "ec.pem", "ed25519.pem", "pkcs8-enc.pem", "rsa-enc-traditional.pem", "ssh-ed25519", "ssh-rsa",
           "pgp-private.asc"]
PUBLIC = ["cert.pem", "public.pem", "ssh-ed25519.pub", "ssh-rsa.pub", "ssh2-rsa.pub", "pgp-public.asc"]
LAYOUTS = {
    "as made": lambda k: k,
    "in JSON": lambda k: json.dumps({"private_key": k}),
    "indented": lambda k: "key: |\n" + "".join(f"  {line}\n" for line in k.splitlines()),
    "CRLF": lambda k: k.replace("\n", "\r\n"),
}


def made(real: dict, name: str) -> str:
    if name not in real:
        pytest.skip(f"no tool here made {name}")
    return real[name]


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
@pytest.mark.parametrize("variant", ["intact", *ARMOR_VARIANTS])
@pytest.mark.parametrize("name", PRIVATE)
def test_real_private_keys_are_replaced(real, name, variant, layout):
    key = made(real, name)
    text = LAYOUTS[layout](key if variant == "intact" else ARMOR_VARIANTS[variant](key))
    scrubbed, counts = scrub(text)
    assert counts == {"private_key": 1}
    assert not any(line in scrubbed for line in body_lines(key))
    assert scrub(scrubbed) == (scrubbed, {})


@pytest.mark.parametrize("name", PRIVATE)
def test_real_private_keys_without_armor_are_replaced_by_shape(real, name):
    key = made(real, name)
    body = "\n".join(line for line in key.splitlines() if "-----" not in line and ":" not in line)
    if len(body_lines(key)) < 3:
        pytest.skip(f"{name} has {len(body_lines(key))} line(s) of base64: too few to be known by shape (documented)")
    scrubbed, counts = scrub(body)
    assert counts == {"base64_block": 1} and not any(line in scrubbed for line in body_lines(key))


@pytest.mark.parametrize("layout", LAYOUTS, ids=list(LAYOUTS))
@pytest.mark.parametrize("name", PUBLIC)
def test_real_certificates_and_public_keys_are_kept(real, name, layout):
    text = LAYOUTS[layout](made(real, name))
    assert scrub(text) == (text, {})
    if "BEGIN" in text:  # one armor line misspelt: the other still says what it is
        misspelt = text.replace("BEGIN", "BEGN", 1)
        assert scrub(misspelt) == (misspelt, {})


@pytest.mark.parametrize(
    "text",
    [
        ("A" * 64 + "\n") * 15_000,
        "A" * 32 + "\na" * 500_000,  # a run of one-letter lines after a wide one
        ("-----BEGIN X-----\n" + "A" * 32 + "\n") * 20_000,
        ("A" * 32 + "-----") * 27_000,
        "A" * 32 + "\\n" * 500_000,
        "A" * 32 + "\n" + " " * 1_000_000,
        ("Key: v\n" * 8 + "A" * 32 + "\n") * 10_000,
        ("-" * 99 + "\n" + "A" * 32 + "\n") * 7_500,
        ('"' + "Ab1" * 21 + '\\n" +\n') * 12_000,
    ],
    ids=["same-lines", "one-letter-lines", "armor-runs", "armor-after", "escaped-breaks", "spaces", "headers",
         "dash-lines", "quoted-lines"],
)
def test_long_adversarial_blocks_complete(text):
    scrubbed, _ = scrub(text)  # no timing assertion: a quadratic scan would not finish
    assert scrub(scrubbed)[0] == scrubbed


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
    *body_lines(pem("PRIVATE KEY", body_lines=3)), "QUJD", "RA==", "=ABCD", "\\n", "\r\n", '" +\n  "', "    ",
    "-----BEGIN RSA PRIVTE KEY-----", "-----END CERTIFICATE-----", "Proc-Type: 4,ENCRYPTED", "LS0tLS1CRUdJTiBQUklW",
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
@pytest.mark.timeout(60)  # about 0.2 s each here; a quadratic pattern would take hours, and fails instead
def test_long_adversarial_lines_complete(text):
    """Megabyte lines shaped to make a careless pattern backtrack end, with the right verdict:
    none of them holds a secret but the one long domain, which is an e-mail address."""
    scrubbed, counts = scrub(text)
    if text.startswith("x@ab."):
        assert (scrubbed, counts) == ("<EMAIL>.", {"email": 1})
    else:
        assert (scrubbed, counts) == (text, {})
