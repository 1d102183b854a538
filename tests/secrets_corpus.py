"""Realistic secrets, one per kind, each in the text a coding session would show it in.

Values are generated (seeded) in the right format for each kind, so no key-shaped literal sits
in the repository. Used by tests/test_secrets_corpus.py and benchmarks/bench_redact.py.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

from ocdspy.convert import load_examples

EXAMPLE = Path(__file__).parent.parent / "examples" / "data" / "raw" / "07-check-mail-config.json"

_RNG = random.Random(20261125)
ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"
URLSAFE = ALNUM + "-_"


def rand(n: int, alphabet: str = ALNUM) -> str:
    while True:
        s = "".join(_RNG.choice(alphabet) for _ in range(n))
        # Realistic tokens mix letters and digits; a letters-only draw is re-drawn.
        mixed = any(c.isdigit() for c in alphabet) and any(c.isalpha() for c in alphabet)
        if not mixed or (any(c.isdigit() for c in s) and any(c.isalpha() for c in s)):
            return s


@dataclass(frozen=True)
class Planted:
    kind: str  # a name for the report, not necessarily the placeholder kind
    secret: str  # the raw value that must not survive anywhere
    text: str  # the secret in context, as a command or a file would show it


def _b64(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


def corpus() -> list[Planted]:
    """The planted secrets (deterministic: the same values on every call)."""
    global _RNG
    _RNG = random.Random(20261125)
    rows: list[tuple[str, str, str]] = [
        ("openai-key", "sk-proj-" + rand(48, URLSAFE), "OPENAI_API_KEY={s}"),
        ("anthropic-key", "sk-ant-api03-" + rand(40, URLSAFE), "export ANTHROPIC_API_KEY={s}"),
        ("aws-access-key-id", "AKIA" + rand(16, string.ascii_uppercase + "234567"), "id {s} ok"),
        (
            "aws-secret-in-credentials",
            rand(40, ALNUM + "/+"),
            "[default]\naws_secret_access_key = {s}\n",
        ),
        (
            "aws-configure-set",
            rand(40, ALNUM + "/+"),
            "aws configure set aws_secret_access_key {s}",
        ),
        ("github-pat", "ghp_" + rand(36), "git clone https://github.com/x/y && echo {s}"),
        ("github-fine-grained", "github_pat_" + rand(22) + "_" + rand(59), "token: {s}"),
        ("gitlab-pat", "glpat-" + rand(20, URLSAFE), "created {s} for CI"),
        ("npm-token", "npm_" + rand(36), "npm token list\n{s}  read-only"),
        (
            "pypi-token",
            "pypi-AgEIcHlwaS5vcmc" + rand(60, URLSAFE),
            "twine upload -u __token__ -p {s} dist/*",
        ),
        (
            "huggingface-token",
            "hf_" + rand(34, string.ascii_letters),
            "huggingface-cli login --token {s}",
        ),
        (
            "slack-bot-token",
            "xoxb-" + rand(12, string.digits) + "-" + rand(12, string.digits) + "-" + rand(24),
            "slack: {s}",
        ),
        (
            "slack-webhook",
            "https://hooks.slack.com/services/T"
            + rand(8).upper()
            + "/B"
            + rand(8).upper()
            + "/"
            + rand(24),
            "curl -X POST {s}",
        ),
        ("stripe-secret", "sk_live_" + rand(24), "Stripe.api_key = '{s}'"),
        ("google-api-key", "AIza" + rand(35, URLSAFE), "maps?key={s}&q=x"),
        ("twilio-api-key", "SK" + rand(32, HEX), "twilio api:core:keys:list\n{s}  default"),
        ("sendgrid-key", "SG." + rand(22, URLSAFE) + "." + rand(43, URLSAFE), "SENDGRID={s}"),
        (
            "discord-bot-token",
            "M" + rand(23, URLSAFE) + "." + rand(6, URLSAFE) + "." + rand(27, URLSAFE),
            "client.run({s})",
        ),
        ("mailgun-key", "key-" + rand(32, HEX), "api:{s} https://api.mailgun.net"),
        ("mailchimp-key", rand(32, HEX) + "-us12", "mc = Client({s})"),
        (
            "terraform-token",
            rand(14, LOWER_ALNUM) + ".atlasv1." + rand(67, URLSAFE),
            "credentials app.terraform.io {{ token = {s} }}",
        ),
        (
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyMSIsImV4cCI6MTcwMH0." + rand(43, URLSAFE),
            "cookie session={s}",
        ),
        (
            "bearer-header",
            rand(40, URLSAFE),
            "curl -H 'Authorization: Bearer {s}' https://api.example.com",
        ),
        ("basic-auth-header", _b64("dana:" + rand(14)), "Authorization: Basic {s}"),
        ("url-password", rand(16), "DATABASE_URL=postgres://app:{s}@db.internal:5432/app"),
        (
            "private-key-pem",
            rand(64, ALNUM + "+/"),
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow{s}\n-----END RSA PRIVATE KEY-----",
        ),
        (
            "azure-account-key",
            rand(86, ALNUM + "+/") + "==",
            "DefaultEndpointsProtocol=https;AccountName=st1;AccountKey={s};EndpointSuffix=core.windows.net",
        ),
        ("export-db-pass-bare", "Tr0ub4dor" + rand(4), "export DB_PASS={s}"),
        ("env-password-letters", rand(10, string.ascii_lowercase), "SMTP_PASSWORD={s}"),
        ("export-db-pass-quoted", "correct horse " + rand(6), 'export DB_PASS="{s}"'),
        ("netrc-password", rand(20), "machine api.example.com\n  login dana\n  password {s}\n"),
        (
            "docker-config-auth",
            _b64("dana:" + rand(18)),
            '{{"auths": {{"ghcr.io": {{"auth": "{s}"}}}}}}',
        ),
        ("mysql-p", "S3cr" + rand(10), "mysql -u root -p{s} invoices < dump.sql"),
        (
            "kubeconfig-client-key-data",
            _b64("-----BEGIN EC PRIVATE KEY-----" + rand(60)),
            "users:\n- name: admin\n  user:\n    client-key-data: {s}\n",
        ),
        ("cli-password-flag", "pw-" + rand(14), "psql --password={s} -h db"),
        ("npmrc-authtoken", rand(36, HEX + "-"), "//registry.npmjs.org/:_authToken={s}"),
        ("digitalocean-token", "dop_v1_" + rand(64, HEX), "doctl auth init -t {s}"),
        ("shopify-token", "shpat_" + rand(32, HEX), "X-Shopify-Access-Token: {s}"),
        ("databricks-token", "dapi" + rand(32, HEX), "host=x token {s}"),
        ("square-token", "sq0atp-" + rand(22, URLSAFE), "square {s}"),
        (
            "telegram-bot-token",
            rand(9, string.digits) + ":AA" + rand(33, URLSAFE),
            "bot = Bot('{s}')",
        ),
        ("vault-token", "hvs." + rand(95, URLSAFE), "VAULT said {s}"),
        ("linear-key", "lin_api_" + rand(40), "linear {s}"),
        ("doppler-token", "dp.pt." + rand(43), "doppler {s}"),
        (
            "age-secret-key",
            "AGE-SECRET-KEY-1"
            + "".join(_RNG.choice("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L") for _ in range(58)),
            "# key\n{s}",
        ),
        ("pulumi-token", "pul-" + rand(40, HEX), "pulumi login {s}"),
        ("grafana-service-token", "glsa_" + rand(32) + "_" + rand(8, HEX), "grafana {s}"),
        ("json-password", "Winter" + rand(8) + "!", '{{"user": "dana", "password": "{s}"}}'),
        (
            "ado-connection-string",
            "Pa55" + rand(10),
            "Server=tcp:db;Database=app;User Id=sa;Password={s};",
        ),
        ("high-entropy-credential", rand(40), "MYSERVICE_CREDENTIALS={s}"),
        ("x-api-key-header", rand(32), "curl -H 'X-Api-Key: {s}' https://api.example.com"),
        ("sshpass", "pw" + rand(12), "sshpass -p {s} ssh deploy@host"),
        ("curl-user", "pw" + rand(12), "curl -u dana:{s} https://x.example.com"),
        ("perplexity-key", "pplx-" + rand(48), "PPLX={s}"),
        ("sentry-user-token", "sntryu_" + rand(64, HEX), "sentry {s}"),
        ("postman-key", "PMAK-" + rand(24, HEX) + "-" + rand(34, HEX), "postman {s}"),
        ("artifactory-key", "AKCp" + rand(69), "jfrog {s}"),
        ("azure-ad-client-secret", rand(3) + "8Q~" + rand(34, URLSAFE + "~."), "AZURE_CLIENT={s}"),
        ("bearer-in-yaml", rand(48, URLSAFE), "headers:\n  token: {s}\n"),
    ]
    return [Planted(kind, secret, text.format(s=secret)) for kind, secret, text in rows]


def session_file(path: Path, i: int, planted: Planted) -> None:
    """A plugin-format session (the shape of the examples) with the secret in args and result."""
    data = json.loads(EXAMPLE.read_text())
    data["session"] = f"ses_corpus{i:03d}"
    turn = data["examples"][0]
    turn["input"]["task"] = f"Check the deployment settings ({i})"
    template = copy.deepcopy(turn["actions"][0])
    run = dict(template, step=1, tool="bash", callID=f"c{i}a", result="done")
    run["args"] = {"command": planted.text, "description": "configure"}
    read = dict(template, step=2, tool="read", callID=f"c{i}b", result=planted.text)
    read["args"] = {"filePath": "/home/dana/src/invoicer/.env"}
    turn["actions"] = [run, read]
    path.write_text(json.dumps(data))


def program_from(train: Path, out: Path) -> Path:
    """A saved program whose demos are the training examples (as optimize would keep them)."""
    demos = []
    for ex in load_examples(train):
        demos.append(
            {
                "task": ex.task,
                "plan": [{"tool": a.tool, "target": a.target} for a in ex.actions],
                "progress": "\n".join(f"{a.tool} -> {a.result[:300]}" for a in ex.actions),
                "response": ex.response,
            }
        )
    step = {"traces": [], "train": [], "demos": demos, "lm": None}
    step["signature"] = {"instructions": "Work carefully.", "fields": []}
    out.write_text(json.dumps({"step": step, "metadata": {}}))
    return out
