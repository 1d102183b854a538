"""Secret redaction: every string that leaves a session log passes through here.

Session logs hold secrets: keys read from `.env` files, tokens printed by commands, private keys
cat'ed by accident, passwords typed on command lines. They are replaced with typed placeholders
(`[REDACTED:openai-key]`) before anything is written to an example, sent to a model or put into
an exported prompt.

One scanner, `find_spans`, finds them; `redact_text` replaces what it finds and `find_secrets`
(export's last check) reports it, so the check can never be weaker than the redaction.

The rules cover, by kind, what Yelp's detect-secrets plugins and gitleaks' default rule set
detect (our own patterns, written from the token formats):

- Tokens with a recognisable shape (`ghp_…`, `glpat-…`, `npm_…`, `SG.….…`, `…atlasv1…`): one
  regular-expression pass finds every run of 20+ token characters, and only the few runs whose
  first two characters (or an inner marker) belong to a known format are matched against that
  format. The cost does not grow with the number of formats.
- Secrets known by their context: private-key blocks, `Authorization:` headers, passwords in
  URLs, command-line flags (`--password X`, `mysql -pX`, `curl -u user:pass`), `.netrc`,
  `aws configure set …`, and `NAME=value` assignments whose name says it holds a secret. Each
  runs only when a literal keyword is present (a substring test is cheap).
- A guarded high-entropy rule: a long random-looking token (letters and digits, high Shannon
  entropy, not a UUID or a bare hex digest) right after a credential word.

Placeholders never match a rule, so redacting twice changes nothing and a redacted text passes
`find_secrets`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

PLACEHOLDER = "[REDACTED:{kind}]"
_MARK = "[REDACTED:"


class Span(NamedTuple):
    """A secret at text[start:end], of a kind (`github-token`, `secret-assignment`, ...)."""

    start: int
    end: int
    kind: str


# ---------------------------------------------------------------------------------------------
# Tokens with a known shape


@dataclass(frozen=True)
class _Token:
    kind: str
    pattern: re.Pattern[str]  # matched where the candidate run starts
    heads: tuple[str, ...] = ()  # literal starts (the index uses their first two characters)
    marker: str = ""  # or: a literal inside the run


_TAIL = r"(?![A-Za-z0-9])"


def _tok(kind: str, regex: str, *heads: str, marker: str = "") -> _Token:
    return _Token(kind, re.compile(regex), heads, marker)


_HEX = "0123456789abcdefABCDEF"
_TOKENS: list[_Token] = [
    _tok("anthropic-key", r"sk-ant-[A-Za-z0-9_\-]{20,}", "sk-ant-"),
    _tok("openai-key", r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}", "sk-"),
    _tok("stripe-key", r"[rsp]k_(?:live|test|prod)_[A-Za-z0-9]{10,}", "sk_", "rk_", "pk_"),
    _tok(
        "aws-access-key",
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}" + _TAIL,
        *("A3T", "AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"),
    ),
    _tok("github-token", r"gh[pousr]_[A-Za-z0-9]{30,255}", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    _tok("github-token", r"github_pat_\w{22,255}", "github_pat_"),
    _tok(
        "gitlab-token",
        r"(?:glpat|gldt|glft|glsoat|glrt|glcbt|glimt|glptt|glagent|gloas|glffct)-[\w\-.]{20,}",
        "glpat-",
        "gldt-",
        "glft-",
        "glsoat-",
        "glrt-",
        "glcbt-",
        "glimt-",
        "glptt-",
        "glagent-",
        "gloas-",
        "glffct-",
    ),
    _tok("gitlab-token", r"GR1348941[\w\-]{20,}", "GR1348941"),
    _tok("npm-token", r"npm_[A-Za-z0-9]{36}" + _TAIL, "npm_"),
    _tok("pypi-token", r"pypi-AgE[A-Za-z0-9_\-]{50,}", "pypi-AgE"),
    _tok("huggingface-token", r"(?:hf_|api_org_)[A-Za-z0-9]{30,}", "hf_", "api_org_"),
    _tok("slack-token", r"xox[abposre]-[A-Za-z0-9\-]{10,}", "xox"),
    _tok("slack-token", r"xapp-\d-[A-Za-z0-9\-]{10,}", "xapp-"),
    _tok("google-api-key", r"AIza[\w\-]{35}", "AIza"),
    _tok("twilio-key", r"(?:SK|AC)[0-9a-fA-F]{32}" + _TAIL, "SK", "AC"),
    _tok("sendgrid-key", r"SG\.[\w\-]{22}\.[\w\-]{43}", "SG."),
    _tok("discord-token", r"[MNO][\w\-]{23,25}\.[\w\-]{6}\.[\w\-]{27,}", "M", "N", "O"),
    _tok("mailgun-key", r"(?:pub)?key-[0-9a-zA-Z]{32}" + _TAIL, "key-", "pubkey-"),
    _tok("mailchimp-key", r"[0-9a-f]{32}-us\d{1,2}(?!\d)", marker="-us"),
    _tok("terraform-token", r"[A-Za-z0-9]{14}\.atlasv1\.[\w\-=]{60,}", marker=".atlasv1."),
    _tok("grafana-token", r"eyJrIjoi[A-Za-z0-9]{70,}={0,3}", "eyJrIjoi"),
    _tok("jwt", r"eyJ[\w\-]{8,}\.eyJ[\w\-]{8,}\.[\w\-]{8,}", "eyJ"),
    _tok("digitalocean-token", r"do[opr]_v1_[a-f0-9]{64}", "dop_v1_", "doo_v1_", "dor_v1_"),
    _tok("shopify-token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", "shp"),
    _tok("square-token", r"sq0(?:atp|csp)-[\w\-]{22,}", "sq0"),
    _tok("databricks-token", r"dapi[a-f0-9]{32}(?:-\d)?" + _TAIL, "dapi"),
    _tok("linear-key", r"lin_api_[A-Za-z0-9]{40}", "lin_api_"),
    _tok("perplexity-key", r"pplx-[A-Za-z0-9]{48}", "pplx-"),
    _tok("planetscale-token", r"pscale_(?:tkn|oauth|pw)_[\w=.\-]{32,64}", "pscale_"),
    _tok("postman-key", r"PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}", "PMAK-"),
    _tok("rubygems-key", r"rubygems_[a-f0-9]{48}", "rubygems_"),
    _tok("sendinblue-key", r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}", "xkeysib-"),
    _tok("sentry-token", r"sntry[us]_[\w+/=]{60,}", "sntryu_", "sntrys_"),
    _tok("vault-token", r"hv[sb]\.[\w\-]{90,}", "hvs.", "hvb."),
    _tok(
        "grafana-token",
        r"(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,}={0,3})",
        "glsa_",
        "glc_",
    ),
    _tok("pulumi-token", r"pul-[a-f0-9]{40}", "pul-"),
    _tok("prefect-key", r"pnu_[A-Za-z0-9]{36}", "pnu_"),
    _tok("notion-token", r"ntn_\d{11}[A-Za-z0-9]{35}", "ntn_"),
    _tok("doppler-token", r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,}", "dp."),
    _tok("age-secret-key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", "AGE-"),
    _tok("alibaba-key", r"LTAI[A-Za-z0-9]{20}" + _TAIL, "LTAI"),
    _tok("easypost-key", r"EZ[AT]K[A-Za-z0-9]{54}", "EZAK", "EZTK"),
    _tok("artifactory-key", r"(?:AKCp[A-Za-z0-9]{69}|cmVmd[A-Za-z0-9]{59})", "AKCp", "cmVmd"),
    _tok("atlassian-token", r"ATATT3[\w\-=]{150,}", "ATATT3"),
    _tok("openshift-token", r"sha256~[\w\-]{43}", "sha256~"),
    _tok("newrelic-key", r"NR(?:AK|II|JS)-[A-Za-z0-9]{19,32}", "NRAK-", "NRII-", "NRJS-"),
    _tok("dynatrace-token", r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}", "dt0c01."),
    _tok("flyio-token", r"(?:fo1_[\w\-]{43}|fm[12][ar]?_[A-Za-z0-9+/]{100,}={0,3})", "fo1_", "fm"),
    _tok("readme-key", r"rdme_[a-z0-9]{70}", "rdme_"),
    _tok("scalingo-token", r"tk-us-[\w\-]{48}", "tk-us-"),
    _tok("infracost-key", r"ico-[A-Za-z0-9]{32}", "ico-"),
    _tok("clojars-token", r"CLOJARS_[A-Za-z0-9]{60}", "CLOJARS_"),
    _tok("duffel-token", r"duffel_(?:test|live)_[\w\-=]{43}", "duffel_"),
    _tok("frameio-token", r"fio-u-[\w\-=]{64}", "fio-u-"),
    _tok("heroku-key", r"HRKU-AA[\w\-]{58}", "HRKU-"),
    _tok("adobe-secret", r"p8e-[A-Za-z0-9]{32}", "p8e-"),
    _tok("shippo-token", r"shippo_(?:live|test)_[a-fA-F0-9]{40}", "shippo_"),
    _tok("settlemint-token", r"sm_(?:aat|pat|sat)_[A-Za-z0-9]{16}", "sm_"),
    _tok("facebook-token", r"EAA[MC][A-Za-z0-9]{100,}", "EAAM", "EAAC"),
    _tok("maxmind-key", r"[A-Za-z0-9]{6}_[A-Za-z0-9]{29}_mmk", marker="_mmk"),
    _tok("azure-client-secret", r"[\w~.]{3}\dQ~[\w~.\-]{31,34}", marker="Q~"),
    _tok("cloudflare-key", r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}", "v1.0-"),
]

# Runs of token characters long enough to be a token (the shortest format, `AKIA…`, is 20).
_CANDIDATE = re.compile(r"[A-Za-z0-9_\-.~]{20,}")
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~"


def _token_index() -> tuple[dict[str, list[_Token]], list[_Token]]:
    by_head: dict[str, list[_Token]] = {}
    for t in _TOKENS:
        for head in t.heads:
            for key in [head[:2]] if len(head) > 1 else [head + c for c in _TOKEN_CHARS]:
                if t not in by_head.setdefault(key, []):
                    by_head[key].append(t)
    return by_head, [t for t in _TOKENS if t.marker]


_BY_HEAD, _BY_MARKER = _token_index()
_MARKERS = re.compile("|".join(re.escape(t.marker) for t in _BY_MARKER))


# ---------------------------------------------------------------------------------------------
# The guarded high-entropy rule


def _entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


_SEQUENCES = ("abcdef", "ABCDEF", "0123456", "qwerty")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_HEX_DIGEST = re.compile(r"[0-9a-f]{7,64}\Z|[0-9A-F]{7,64}\Z")
# Words that, just before a long random token, say it is a credential.
_CREDENTIAL_WORDS = ("key", "token", "secret", "passw", "auth", "credential", "bearer", "apikey")


_SEGMENT = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_VOWELS = frozenset("aeiouyAEIOUY")
_NAME_LIKE = re.compile(r"[A-Za-z0-9_.\-]+\Z")


def wordy(value: str) -> bool:
    """Mostly made of words, as names in code are (`SyncX509WorkloadIdentityAuth`,
    `validate_x509_api_credentials`): a random token has few runs of 3+ letters with a vowel."""
    if _NAME_LIKE.match(value) is None:
        return False  # `/`, `+`, `=` and the like belong to encodings, not to names
    letters = sum(
        len(seg)
        for seg in _SEGMENT.findall(value)
        if len(seg) >= 3 and any(c in _VOWELS for c in seg)
    )
    return letters >= 0.6 * len(value)


def looks_random(value: str, *, min_len: int = 16) -> bool:
    """A token of letters and digits with high entropy: not a word, name, UUID or hex digest."""
    if len(value) < min_len or _UUID.match(value) or _HEX_DIGEST.match(value):
        return False
    if wordy(value):
        return False
    if any(seq in value for seq in _SEQUENCES):
        return False  # an alphabet written out, not a key
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and _entropy(value) >= 3.5


def _high_entropy(low: str, start: int, run: str) -> Span | None:
    window = low[max(0, start - 40) : start]
    if not any(w in window for w in _CREDENTIAL_WORDS):
        return None
    token = run.rstrip(".-_~")
    if not looks_random(token, min_len=24):
        return None
    return Span(start, start + len(token), "high-entropy-secret")


def _token_spans(text: str, low: str) -> Iterator[Span]:
    # Most runs are long identifiers: each costs one dict lookup and one marker search (in C);
    # the entropy rule looks only when the text mentions a credential at all.
    credential = any(w in low for w in _CREDENTIAL_WORDS)
    for m in _CANDIDATE.finditer(text):
        start = m.start()
        rules = _BY_HEAD.get(text[start : start + 2], ())
        marker = _MARKERS.search(m.group())
        if marker:
            rules = [*rules, *(t for t in _BY_MARKER if t.marker == marker.group())]
        for t in rules:
            hit = t.pattern.match(text, start)
            if hit:
                yield Span(start, hit.end(), t.kind)
                break
        else:
            if credential and m.end() - start >= 24:
                span = _high_entropy(low, start, m.group())
                if span:
                    yield span


# ---------------------------------------------------------------------------------------------
# Secrets known by their context


@dataclass(frozen=True)
class _Context:
    kind: str
    pattern: re.Pattern[str]
    # One of them must be in the lower-cased text. None: the pattern starts with a literal, which
    # the regex engine finds as fast as a substring test would.
    triggers: tuple[str, ...] | None
    group: str | None = None  # the named group holding the secret; None = the whole match
    accept: Callable[[re.Match[str]], bool] | None = None


_QUOTED_OR_BARE = r"(?P<secret>\"[^\"\n]{1,200}\"|'[^'\n]{1,200}'|[^\s'\"`\\]*[^\s'\"`\\,;)])"
_SECRET_FLAGS = (
    r"password|passwd|pass|pwd|passphrase|token|api[-_]?key|apikey|secret|client[-_]secret"
    r"|auth[-_]token|access[-_]token|refresh[-_]token|private[-_]key|secret[-_]key"
    r"|access[-_]key|storepass|keypass|db[-_]password"
)


def _value_ok(m: re.Match[str]) -> bool:
    return not _harmless(m.group("secret").strip("'\""))


_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def _code_name(value: str) -> bool:
    """`self._expected_authorization`, `auth_header`: a name in code, not a credential."""
    return _DOTTED_NAME.match(value) is not None and wordy(value.replace(".", "_"))


_CONTEXT: list[_Context] = [
    _Context(
        "private-key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]*)"
        ),
        None,
    ),
    _Context(
        "private-key",
        re.compile(r"Private-Lines: *\d+\s+(?P<secret>[A-Za-z0-9+/=\s]+?)(?:Private-MAC|\Z)"),
        None,
        "secret",
    ),
    _Context(
        "telegram-token",
        re.compile(r"(?<![\w])\d{8,10}:AA[\w\-]{33}" + _TAIL),
        (":aa",),
    ),
    _Context(
        "slack-webhook",
        re.compile(
            r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,}"
        ),
        None,
    ),
    _Context(
        "webhook-token",
        re.compile(r"/api/webhooks/\d+/(?P<secret>[\w\-]{30,})"),
        None,
        "secret",
    ),
    _Context(
        "bearer-token",
        re.compile(r"(?<![\w-])(?i:bearer)\s+(?P<secret>[A-Za-z0-9\-._~+/]{16,}=*)"),
        ("bearer",),
        "secret",
    ),
    _Context(
        "authorization-header",
        re.compile(
            r"(?i:authorization|proxy-authorization)[\"']?\s*[:=]\s*[\"']?"
            r"(?:(?i:basic|bearer|token|digest|apikey|key|sso-key|negotiate)\s+)?"
            r"(?P<secret>[A-Za-z0-9\-._~+/:=]{8,})"
        ),
        ("authorization",),
        "secret",
        lambda m: _value_ok(m) and not _code_name(m.group("secret")),
    ),
    _Context(
        "url-password",
        re.compile(r"://[^\s:/@'\"]{1,64}:(?P<secret>[^\s:/@'\"]{3,128})@"),
        None,
        "secret",
        _value_ok,
    ),
    _Context(
        "cli-password",
        # A literal first character lets the regex engine skip to each `-` quickly.
        re.compile(r"-(?<![\w-]-)-?(?i:" + _SECRET_FLAGS + r")(?:=|[ \t]+)" + _QUOTED_OR_BARE),
        None,
        "secret",
        lambda m: _value_ok(m) and not m.group("secret").startswith("-"),
    ),
    _Context(
        "cli-password",
        re.compile(
            r"\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlsh|mariadb)\b[^\n|;&]*?"
            r"(?<=\s)-p" + _QUOTED_OR_BARE
        ),
        ("mysql", "mariadb"),
        "secret",
        _value_ok,
    ),
    _Context(
        "cli-password",
        re.compile(r"\b(?:sshpass\s+-p|redis-cli\b[^\n|;&]*?\s-a)\s*" + _QUOTED_OR_BARE),
        ("sshpass", "redis-cli"),
        "secret",
        _value_ok,
    ),
    _Context(
        "cli-password",
        re.compile(r"-(?<![\w-]-)(?:u|-user)[ =][\"']?[^\s:'\"]{1,64}:" + _QUOTED_OR_BARE),
        None,
        "secret",
        _value_ok,
    ),
    _Context(
        "secret-assignment",
        re.compile(
            r"config(?<!\wconfig)(?:ure)?(?: |:)set\s+(?:--?[\w-]+\s+)*(?P<name>[^\s=]+)[ \t]+"
            + _QUOTED_OR_BARE
        ),
        None,
        "secret",
        lambda m: _value_ok(m) and _secret_name(m.group("name"), strict=False) is not False,
    ),
    _Context(
        "netrc-password",
        # The .netrc shape: `machine HOST [login USER] password SECRET`, on one line or several.
        re.compile(
            r"\b(?:machine\s+\S+|default)(?:\s+(?:login|account)\s+\S+)*\s+password\s+"
            r"(?P<secret>\S+)"
        ),
        ("machine",),
        "secret",
        _value_ok,
    ),
]


# ---------------------------------------------------------------------------------------------
# NAME=value assignments


_HARMLESS = re.compile(
    r"(?i)(?:true|false|null|none|nil|undefined|yes|no|on|off|required|optional|str|string|int"
    r"|bytes|bool|secretstr|any|password|passwd|pass|pwd|secret|token|test|example|changeme"
    r"|changeit|[\d.,:eE+\-]+|x+|\*+|\.\.\.+|•+|-)\Z"
    # An identifier in kebab case (`not-needed`) or a constant-style placeholder (`VALUE`).
    r"|[a-z]+(?:-[a-z]+)+\Z|(?-i:[A-Z_]+)\Z"
)
_REFERENCE = re.compile(r"[$<{%@]|\[REDACTED|os\.|process\.env|env[\[(.]")
_MASKED = ("…", "***", "xxxx", "XXXX")
_REGEX_LITERAL = re.compile(r"/.*[\[\\(+*].*/[dgimsuy]*;?\Z")  # `TOKEN = /[A-Za-z0-9_]+/g`
_CODE_EXPR = re.compile(r"[\w.]*[(\[{]|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\Z")


def _harmless(value: str) -> bool:
    """Not a secret: short, a literal like `true`, a number, a mask, a reference (`$VAR`)."""
    return (
        len(value) < 3
        or _HARMLESS.match(value) is not None
        or _REFERENCE.match(value) is not None
        or _REGEX_LITERAL.match(value) is not None
        or any(m in value for m in _MASKED)
        or any(seq in value for seq in _SEQUENCES)
        or value.startswith(_MARK)
    )


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# Words that make a name secret on their own, and joined words (separators removed) that do.
_STRONG_WORDS = _words(
    "password passwd pwd passphrase secret secrets credential credentials creds contrasena"
)
_STRONG_JOINED = (
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
    "accountkey",
    "sharedaccesskey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "clientkey",
    "keydata",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "sessiontoken",
    "bearertoken",
    "clientsecret",
    "authkey",
    "servicekey",
    "dbkey",
    "dbpass",
    "databasepass",
    # Glued-on words in environment names: PGPASSWORD, REDISPASSWORD, MYSQLPWD.
    "password",
    "passwd",
)
# Words that make a name secret only with a random-looking value (a `"key": "name"` is common).
_WEAK_WORDS = _words("key token auth pass pw sig signature apikey")
# Names ending in these describe a secret without holding one (`API_KEY_ID`, `TOKEN_URL`).
_NOT_SECRET_LAST = _words(
    "id ids url uri urls path file dir name names type types length len size count endpoint"
    " host port user username email region mode enabled timeout env var header format prefix"
    " hint field fields"
    " kind version expiry expires ttl rate limit"
)


def _secret_name(name: str, *, strict: bool) -> bool | None:
    """True: a name for a secret; None: only with a random-looking value; False: not secret."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if not words or words[-1] in _NOT_SECRET_LAST or "public" in words:
        return False
    if _strong_name(name):
        return True
    if not any(w in _WEAK_WORDS for w in words):
        return False
    # An environment variable (`GITHUB_TOKEN`, `DB_PASS`) is treated as strong.
    return True if name.isupper() and not strict else None


def _strong_name(name: str) -> bool:
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    joined = "".join(words)
    return any(w in _STRONG_WORDS for w in words) or any(j in joined for j in _STRONG_JOINED)


def _password_word(name: str) -> bool:
    """`DB_PASS`, `REDIS_PW`: a short password word, where any value is a password."""
    return any(w.lower() in ("pass", "pw") for w in _WORD_SPLIT.split(name) if w)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _names_a_variable(name: str, value: str, op: str) -> bool:
    """An unquoted value that names something in code rather than holding a secret.

    `api_key=api_key,` and `access_token=access` pass a variable on; `api_key: Credential` is a
    type. An environment-style `NAME=hunter2` (upper-case name, `=` without spaces) is still a
    value, and so is anything with two digits or a symbol (`lowerSecret42x`, `Password123!`).
    """
    if not _IDENTIFIER.match(value):
        return False
    low_value = value.lower()
    name_words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if low_value in name_words or low_value.replace("_", "") in "".join(name_words):
        return True
    if not wordy(value):
        return False  # `lowerSecret42x` is a value, whatever the style
    if "=" not in op:  # `name: Type`, a type annotation or a YAML key naming a type
        bare = value.lstrip("_")
        type_name = bool(bare) and bare[0].isupper() and not bare.isupper()
        return type_name or low_value in _TYPES
    return not name.isupper()


_TYPES = _words("object dict list tuple set float callable type bytes str int bool any")


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_ASSIGN_KEYWORDS = ("key", "token", "secret", "pass", "pwd", "credential", "creds", "auth", "sig")
_ASSIGN_AT = re.compile(
    r"(?i:key|token|secret|pass|pwd|credentials?|creds|auth|sig)"
    r"(?P<name>[A-Za-z0-9_\-.]*)(?P<close>[\"'\]]{0,2})(?P<op>[ \t]*(?::=|=>|[=:])[ \t]*)"
    r"(?P<value>\"[^\"\n]{1,256}\"|'[^'\n]{1,256}'|`[^`\n]{1,256}`|[^\s\"',;`\\]{3,512})"
)


_PROSE_NEXT = re.compile(r" +[A-Za-z]")


def _assignment(text: str, m: re.Match[str]) -> Span | None:
    start = m.start()
    while start > 0 and text[start - 1] in _NAME_CHARS:
        start -= 1
    name = text[start : m.end("name")].strip(".-")
    strength = _secret_name(name, strict=False)
    raw = m.group("value")
    quoted = raw[0] in "\"'`"
    value = raw[1:-1] if quoted else raw.rstrip(")]}")
    if strength is False or _harmless(value):
        return None
    op = m.group("op")
    if not quoted and (_CODE_EXPR.match(value) or _names_a_variable(name, value, op)):
        return None  # `api_key = settings.api_key`, `token = get_token()`, `api_key=api_key,`
    if not quoted and "=" not in op and _PROSE_NEXT.match(text, m.end()):
        return None  # prose: `the secret: keys live in the vault`
    code_style = not quoted and " " in op and "=" in op
    needs_random = strength is None or (code_style and not name.isupper())
    if needs_random and not looks_random(value, min_len=8):
        return None
    # `CACHE_KEY = "ctx"`: an upper-case name with only a weak word holds a secret when the
    # value has the length and a digit of one.
    weak_name = not _strong_name(name) and not _password_word(name)
    long_with_digit = len(value) >= 8 and any(c.isdigit() for c in value)
    if weak_name and not long_with_digit and not looks_random(value, min_len=8):
        return None
    s, e = m.span("value")
    return Span(s + 1, e - 1, "secret-assignment") if quoted else Span(s, e, "secret-assignment")


def _assignment_spans(text: str, low: str) -> Iterator[Span]:
    seen: set[int] = set()
    for word in _ASSIGN_KEYWORDS:
        i = low.find(word)
        while i != -1:
            m = _ASSIGN_AT.match(text, i)
            if m is not None and m.end() not in seen:
                seen.add(m.end())
                span = _assignment(text, m)
                if span is not None:
                    yield span
            i = low.find(word, i + 1)


_CONTEXT_ALWAYS = {i for i, rule in enumerate(_CONTEXT) if rule.triggers is None}
_CONTEXT_TRIGGERS = [(t, i) for i, rule in enumerate(_CONTEXT) for t in rule.triggers or ()]


def _context_spans(text: str, low: str) -> Iterator[Span]:
    for i in sorted(_CONTEXT_ALWAYS.union(i for t, i in _CONTEXT_TRIGGERS if t in low)):
        rule = _CONTEXT[i]
        for m in rule.pattern.finditer(text):
            if rule.accept is not None and not rule.accept(m):
                continue
            s, e = m.span(rule.group) if rule.group else m.span()
            if rule.group and text[s] in "\"'" and e - s > 1 and text[e - 1] == text[s]:
                s, e = s + 1, e - 1
            yield Span(s, e, rule.kind)


# ---------------------------------------------------------------------------------------------
# The scanner


# When spans overlap, the joined span is named after the most specific kind.
_GENERIC_RANK = {"secret-assignment": 3, "high-entropy-secret": 3, "authorization-header": 2}


def _merge(spans: list[Span]) -> list[Span]:
    """Sorted, overlapping spans joined into one."""
    out: list[Span] = []
    for s in sorted(spans):
        if out and s.start < out[-1].end:
            last = out[-1]
            better = _GENERIC_RANK.get(s.kind, 1) < _GENERIC_RANK.get(last.kind, 1)
            out[-1] = Span(last.start, max(last.end, s.end), s.kind if better else last.kind)
        else:
            out.append(s)
    return out


def find_spans(text: str) -> list[Span]:
    """Every secret in `text`, as sorted, non-overlapping spans. Placeholders are never found."""
    if len(text) < 8:
        return []
    low = text.lower()
    spans = [s for s in _token_spans(text, low) if s.end > s.start]
    spans += _context_spans(text, low)
    spans += _assignment_spans(text, low)
    # A placeholder's own text never counts (`--password [REDACTED:cli-password]`).
    spans = [s for s in spans if not text.startswith(_MARK, s.start) and s.end > s.start]
    return _merge(spans) if len(spans) > 1 else spans


def redact_text(text: str, counts: Counter[str] | None = None) -> str:
    """Replace every secret in `text` with a typed placeholder, counting kinds into `counts`."""
    spans = find_spans(text)
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for s in spans:
        parts += [text[pos : s.start], PLACEHOLDER.format(kind=s.kind)]
        pos = s.end
        if counts is not None:
            counts[s.kind] += 1
    parts.append(text[pos:])
    return "".join(parts)


def redact_value(value: Any, counts: Counter[str] | None = None) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, strings), keys included.

    A string value under a secret-looking key (`{"password": "hunter2"}` as tool arguments) is
    judged as the assignment it is.
    """
    if isinstance(value, str):
        return redact_text(value, counts)
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and isinstance(v, str) and _keyed_secret(k, v):
                if counts is not None:
                    counts["secret-assignment"] += 1
                out[redact_text(k, counts)] = PLACEHOLDER.format(kind="secret-assignment")
                continue
            out[redact_text(k, counts) if isinstance(k, str) else k] = redact_value(v, counts)
        return out
    if isinstance(value, list):
        return [redact_value(v, counts) for v in value]
    return value


def _keyed_secret(key: str, value: str) -> bool:
    """Judged exactly as its JSON text would be, so export's check agrees with redaction."""
    low = key.lower()
    if "\n" in value or not any(w in low for w in _ASSIGN_KEYWORDS):
        return False
    pair = json.dumps({key: value}, ensure_ascii=False)
    return any(s.kind == "secret-assignment" for s in find_spans(pair))


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(kind, short excerpt) for each secret in `text`; export's last check before writing."""
    return [(s.kind, text[s.start : s.start + 4] + "…") for s in find_spans(text)]
