"""The seed projects of the bench corpus (see record_corpus.py): files and task catalogues.

Three small projects of different kinds, each a real git repository whose tests really run:

- ``ledger``: a Python library with pytest tests (``python3 -m pytest -q``);
- ``tally``: a Node.js CLI with ``node:test`` tests (``npm test`` / ``node --test``) and a lint
  script (``npm run lint``);
- ``relkit``: release shell scripts with a Makefile, a bash test runner (``make test``) and
  docs (``make lint`` runs ``bash -n`` over every script).

Each project lists its functions (for explanations and new tests), bugs (a one-line change to a
function that a test catches), features, renames and lint problems. Trajectories are built from
these in record_corpus.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Func:
    name: str
    file: str
    summary: str
    test_file: str  # the existing test file that covers it
    new_test: str  # a new, passing test file covering an edge case


@dataclass(frozen=True)
class Bug:
    func: str
    good: str  # the correct line(s) in the function's file
    bad: str  # the buggy replacement injected before the session
    symptom: str  # what the user reports
    cause: str  # what the agent says was wrong


@dataclass(frozen=True)
class Feature:
    ask: str  # the user's request
    file: str
    anchor: str  # existing text the new code goes after
    code: str  # the new code (inserted after anchor)
    test_file: str  # new test file
    test: str
    done: str  # the agent's final answer
    replaces: bool = False  # ``code`` replaces the anchor instead of following it

    @property
    def new_text(self) -> str:
        return self.code if self.replaces else self.anchor + self.code


@dataclass(frozen=True)
class LintBug:
    file: str
    good: str
    bad: str
    message: str


@dataclass
class Project:
    name: str
    kind: str
    files: dict[str, str]
    test_cmd: str
    test_one: str  # format string with {file}
    wrong_test_cmd: str  # a plausible first try that fails
    lint_cmd: str | None
    run_cmd: str
    wrong_run_cmd: str
    run_ask: str
    funcs: list[Func]
    bugs: list[Bug]
    features: list[Feature]
    renames: list[tuple[str, str]]
    lint_bugs: list[LintBug] = field(default_factory=list)
    source_glob: str = "**/*.py"
    include: str = "*.py"
    test_dir: str = "tests"
    executable: tuple[str, ...] = ()

    def func(self, name: str) -> Func:
        return next(f for f in self.funcs if f.name == name)


# =========================================================================== ledger (Python)

LEDGER_MONEY = '''\
"""Amounts of money as integer cents."""

from decimal import ROUND_HALF_UP, Decimal


def parse_amount(text: str) -> int:
    """'12.34' or '$1,234.50' -> cents."""
    cleaned = text.strip().replace("$", "").replace(",", "")
    value = Decimal(cleaned) * 100
    return int(value.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def format_cents(cents: int) -> str:
    """1234 -> '$12.34'; negative amounts get a leading minus."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}${dollars:,}.{rest:02d}"


def add_tax(cents: int, rate: float) -> int:
    """Cents plus tax at ``rate`` (0.2 for 20%), rounded half up."""
    tax = Decimal(cents) * Decimal(str(rate))
    return cents + int(tax.quantize(Decimal("1"), rounding=ROUND_HALF_UP))


def split_evenly(cents: int, parts: int) -> list[int]:
    """Split into ``parts`` shares that differ by at most one cent and sum to ``cents``."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    base, extra = divmod(cents, parts)
    return [base + 1 if i < extra else base for i in range(parts)]
'''

LEDGER_ACCOUNTS = '''\
"""A bank account with a transaction history."""

from dataclasses import dataclass, field


class InsufficientFunds(Exception):
    """Raised when a withdrawal would overdraw the account."""


@dataclass
class Account:
    owner: str
    balance: int = 0
    history: list[tuple[str, int]] = field(default_factory=list)

    def deposit(self, cents: int) -> None:
        if cents <= 0:
            raise ValueError("deposit must be positive")
        self.balance += cents
        self.history.append(("deposit", cents))

    def withdraw(self, cents: int) -> None:
        if cents > self.balance:
            raise InsufficientFunds(f"{self.owner} has only {self.balance} cents")
        self.balance -= cents
        self.history.append(("withdraw", cents))
'''

LEDGER_REPORT = '''\
"""Summaries of transaction lists."""

from collections import Counter

from .money import format_cents


def total(transactions: list[dict]) -> int:
    return sum(t["cents"] for t in transactions)


def by_category(transactions: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in transactions:
        out[t["category"]] = out.get(t["category"], 0) + t["cents"]
    return out


def top_categories(transactions: list[dict], n: int = 3) -> list[str]:
    # TODO: break ties by name so the order is stable
    counts: Counter[str] = Counter(by_category(transactions))
    return [name for name, _ in counts.most_common(n)]


def summary_line(transactions: list[dict]) -> str:
    return f"{len(transactions)} transactions, total {format_cents(total(transactions))}"
'''

LEDGER_TEXTUTIL = '''\
"""Small text helpers used by the reports."""

import re


def slugify(text: str) -> str:
    """'Rent & Utilities' -> 'rent-utilities'."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)


def truncate(text: str, width: int, suffix: str = "...") -> str:
    """Cut ``text`` to ``width`` characters, ending with ``suffix`` when cut."""
    if len(text) <= width:
        return text
    return text[: width - len(suffix)] + suffix
'''

LEDGER_IO = '''\
"""Read transactions from a CSV file."""

import csv

from .money import parse_amount


def load_csv(path: str) -> list[dict]:
    # TODO: validate the header row and report missing columns
    with open(path, newline="") as fh:
        return [
            {"date": row["date"], "category": row["category"], "cents": parse_amount(row["amount"])}
            for row in csv.DictReader(fh)
        ]
'''

LEDGER_MAIN = """\
import sys

from .io import load_csv
from .money import format_cents
from .report import by_category, summary_line

if __name__ == "__main__":
    rows = load_csv(sys.argv[1] if len(sys.argv) > 1 else "data/transactions.csv")
    print(summary_line(rows))
    for category, cents in sorted(by_category(rows).items()):
        print(f"  {category:<12} {format_cents(cents):>12}")
"""

LEDGER_TEST_MONEY = """\
import pytest

from ledger.money import add_tax, format_cents, parse_amount, split_evenly


def test_parse_amount_plain_and_symbols():
    assert parse_amount("12.34") == 1234
    assert parse_amount("$1,234.50") == 123450


def test_format_cents_pads_and_signs():
    assert format_cents(1205) == "$12.05"
    assert format_cents(-99) == "-$0.99"
    assert format_cents(123456789) == "$1,234,567.89"


def test_add_tax_rounds_half_up():
    assert add_tax(1000, 0.2) == 1200
    assert add_tax(1005, 0.1) == 1106


def test_split_evenly_sums_to_total():
    assert split_evenly(100, 3) == [34, 33, 33]
    assert sum(split_evenly(1001, 7)) == 1001


def test_split_evenly_rejects_zero_parts():
    with pytest.raises(ValueError):
        split_evenly(100, 0)
"""

LEDGER_TEST_ACCOUNTS = """\
import pytest

from ledger.accounts import Account, InsufficientFunds


def test_deposits_add_up():
    acc = Account("ann")
    acc.deposit(500)
    acc.deposit(250)
    assert acc.balance == 750
    assert acc.history == [("deposit", 500), ("deposit", 250)]


def test_withdraw_whole_balance():
    acc = Account("bob", balance=300)
    acc.withdraw(300)
    assert acc.balance == 0


def test_overdraw_raises():
    acc = Account("cy", balance=100)
    with pytest.raises(InsufficientFunds):
        acc.withdraw(101)
"""

LEDGER_TEST_REPORT = """\
from ledger.report import by_category, summary_line, top_categories, total

TX = [
    {"date": "2024-01-02", "category": "food", "cents": 1250},
    {"date": "2024-01-03", "category": "rent", "cents": 90000},
    {"date": "2024-01-05", "category": "food", "cents": 830},
    {"date": "2024-01-09", "category": "books", "cents": 2400},
]


def test_total():
    assert total(TX) == 94480


def test_by_category_sums_each_category():
    assert by_category(TX) == {"food": 2080, "rent": 90000, "books": 2400}


def test_top_categories():
    assert top_categories(TX, 2) == ["rent", "books"]


def test_summary_line():
    assert summary_line(TX) == "4 transactions, total $944.80"
"""

LEDGER_TEST_TEXTUTIL = """\
from ledger.textutil import slugify, truncate


def test_slugify():
    assert slugify("Rent & Utilities") == "rent-utilities"
    assert slugify("  Q3 Report  ") == "q3-report"


def test_truncate_keeps_short_text():
    assert truncate("abcdef", 6) == "abcdef"


def test_truncate_cuts_long_text():
    assert truncate("abcdefghij", 6) == "abc..."
"""

LEDGER_FILES = {
    "README.md": "# ledger\n\nPersonal-finance helpers: parse amounts, keep accounts, summarise "
    "transactions.\n\n## Usage\n\n    python3 -m ledger data/transactions.csv\n\n"
    "## Development\n\n    python3 -m pytest -q\n",
    "pyproject.toml": '[project]\nname = "ledger"\nversion = "0.4.0"\nrequires-python = ">=3.10"\n'
    '\n[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    ".gitignore": "__pycache__/\n*.pyc\n.pytest_cache/\nbuild/\n",
    "ledger/__init__.py": '"""Personal-finance helpers."""\n\n__version__ = "0.4.0"\n',
    "ledger/__main__.py": LEDGER_MAIN,
    "ledger/money.py": LEDGER_MONEY,
    "ledger/accounts.py": LEDGER_ACCOUNTS,
    "ledger/report.py": LEDGER_REPORT,
    "ledger/textutil.py": LEDGER_TEXTUTIL,
    "ledger/io.py": LEDGER_IO,
    "tests/test_money.py": LEDGER_TEST_MONEY,
    "tests/test_accounts.py": LEDGER_TEST_ACCOUNTS,
    "tests/test_report.py": LEDGER_TEST_REPORT,
    "tests/test_textutil.py": LEDGER_TEST_TEXTUTIL,
    "data/transactions.csv": "date,category,amount\n2024-01-02,food,12.50\n"
    "2024-01-03,rent,900.00\n2024-01-05,food,8.30\n2024-01-09,books,24.00\n",
}


def _py_test(imports: str, body: str) -> str:
    return f"{imports}\n\n\n{body}"


LEDGER_FUNCS = [
    Func(
        "parse_amount",
        "ledger/money.py",
        "strips `$` and thousands separators, multiplies the Decimal by 100 and rounds half up "
        "to integer cents",
        "tests/test_money.py",
        _py_test(
            "from ledger.money import parse_amount",
            'def test_parse_amount_rounds_half_up():\n    assert parse_amount("0.005") == 1\n'
            '    assert parse_amount(" 7 ") == 700\n',
        ),
    ),
    Func(
        "format_cents",
        "ledger/money.py",
        "splits the absolute value into dollars and cents with divmod, adds thousands "
        "separators, pads the cents to two digits and prefixes `-` for negative amounts",
        "tests/test_money.py",
        _py_test(
            "from ledger.money import format_cents",
            'def test_format_cents_zero():\n    assert format_cents(0) == "$0.00"\n'
            '    assert format_cents(7) == "$0.07"\n',
        ),
    ),
    Func(
        "add_tax",
        "ledger/money.py",
        "multiplies the cents by the rate as a Decimal, rounds the tax half up and adds it",
        "tests/test_money.py",
        _py_test(
            "from ledger.money import add_tax",
            "def test_add_tax_zero_rate():\n    assert add_tax(1234, 0) == 1234\n"
            "    assert add_tax(0, 0.25) == 0\n",
        ),
    ),
    Func(
        "split_evenly",
        "ledger/money.py",
        "divides with divmod and gives the first `extra` shares one more cent, so the shares "
        "sum to the total; it raises ValueError for zero or negative parts",
        "tests/test_money.py",
        _py_test(
            "from ledger.money import split_evenly",
            "def test_split_evenly_exact():\n    assert split_evenly(90, 3) == [30, 30, 30]\n"
            "    assert split_evenly(5, 1) == [5]\n",
        ),
    ),
    Func(
        "withdraw",
        "ledger/accounts.py",
        "raises InsufficientFunds when the amount exceeds the balance, otherwise subtracts it "
        "and appends a ('withdraw', cents) entry to the history",
        "tests/test_accounts.py",
        _py_test(
            "from ledger.accounts import Account",
            'def test_withdraw_records_history():\n    acc = Account("dee", balance=50)\n'
            '    acc.withdraw(20)\n    assert acc.history == [("withdraw", 20)]\n'
            "    assert acc.balance == 30\n",
        ),
    ),
    Func(
        "deposit",
        "ledger/accounts.py",
        "rejects non-positive amounts with ValueError, adds the amount to the balance and "
        "records a ('deposit', cents) entry",
        "tests/test_accounts.py",
        _py_test(
            "import pytest\n\nfrom ledger.accounts import Account",
            "def test_deposit_rejects_zero():\n    with pytest.raises(ValueError):\n"
            '        Account("eve").deposit(0)\n',
        ),
    ),
    Func(
        "by_category",
        "ledger/report.py",
        "accumulates the cents of every transaction into a dict keyed by category",
        "tests/test_report.py",
        _py_test(
            "from ledger.report import by_category",
            "def test_by_category_empty():\n    assert by_category([]) == {}\n",
        ),
    ),
    Func(
        "top_categories",
        "ledger/report.py",
        "builds a Counter from the per-category totals and returns the names of the `n` largest",
        "tests/test_report.py",
        _py_test(
            "from ledger.report import top_categories",
            'def test_top_categories_fewer_than_n():\n    tx = [{"category": "a", "cents": 1}]\n'
            '    assert top_categories(tx, 5) == ["a"]\n',
        ),
    ),
    Func(
        "summary_line",
        "ledger/report.py",
        "returns '<count> transactions, total <amount>' using format_cents for the total",
        "tests/test_report.py",
        _py_test(
            "from ledger.report import summary_line",
            "def test_summary_line_empty():\n    assert summary_line([]) == "
            '"0 transactions, total $0.00"\n',
        ),
    ),
    Func(
        "slugify",
        "ledger/textutil.py",
        "lower-cases the text, keeps runs of letters and digits and joins them with `-`",
        "tests/test_textutil.py",
        _py_test(
            "from ledger.textutil import slugify",
            'def test_slugify_only_symbols():\n    assert slugify("&&&") == ""\n'
            '    assert slugify("A1 b2") == "a1-b2"\n',
        ),
    ),
    Func(
        "truncate",
        "ledger/textutil.py",
        "returns the text unchanged when it fits in `width`, otherwise cuts it so that the "
        "result including the suffix is exactly `width` characters",
        "tests/test_textutil.py",
        _py_test(
            "from ledger.textutil import truncate",
            'def test_truncate_custom_suffix():\n    assert truncate("abcdefgh", 5, "~") == '
            '"abcd~"\n',
        ),
    ),
    Func(
        "load_csv",
        "ledger/io.py",
        "reads the CSV with csv.DictReader and returns one dict per row with `date`, "
        "`category` and the amount parsed to cents",
        "tests/test_report.py",
        _py_test(
            "from ledger.io import load_csv",
            'def test_load_csv(tmp_path):\n    f = tmp_path / "t.csv"\n'
            '    f.write_text("date,category,amount\\n2024-02-01,fees,1.50\\n")\n'
            '    assert load_csv(str(f)) == [{"date": "2024-02-01", "category": "fees", '
            '"cents": 150}]\n',
        ),
    ),
]

LEDGER_BUGS = [
    Bug(
        "parse_amount",
        "value = Decimal(cleaned) * 100",
        "value = Decimal(cleaned) * 10",
        "parse_amount('12.34') returns 123 instead of 1234",
        "it multiplied by 10 instead of 100 when converting to cents",
    ),
    Bug(
        "format_cents",
        'return f"{sign}${dollars:,}.{rest:02d}"',
        'return f"{sign}${dollars:,}.{rest}"',
        "format_cents(1205) prints $12.5 instead of $12.05",
        "the cents were not zero-padded to two digits",
    ),
    Bug(
        "add_tax",
        'return cents + int(tax.quantize(Decimal("1"), rounding=ROUND_HALF_UP))',
        "return cents + int(tax)",
        "add_tax is off by a cent for some amounts, e.g. add_tax(1005, 0.1) gives 1105",
        "the tax was truncated with int() instead of rounded half up",
    ),
    Bug(
        "split_evenly",
        "return [base + 1 if i < extra else base for i in range(parts)]",
        "return [base + 1 if i <= extra else base for i in range(parts)]",
        "split_evenly(100, 3) returns shares that add up to 101",
        "the comparison `i <= extra` gave one share too many the extra cent",
    ),
    Bug(
        "withdraw",
        "if cents > self.balance:",
        "if cents >= self.balance:",
        "withdrawing the whole balance raises InsufficientFunds",
        "the overdraft check used `>=`, so withdrawing exactly the balance was refused",
    ),
    Bug(
        "deposit",
        "self.balance += cents",
        "self.balance = cents",
        "after two deposits the balance only shows the last one",
        "deposit assigned the amount to the balance instead of adding it",
    ),
    Bug(
        "by_category",
        'out[t["category"]] = out.get(t["category"], 0) + t["cents"]',
        'out[t["category"]] = t["cents"]',
        "by_category only keeps the last transaction of each category",
        "each transaction overwrote the category total instead of adding to it",
    ),
    Bug(
        "top_categories",
        "return [name for name, _ in counts.most_common(n)]",
        "return [name for name, _ in counts.most_common(n - 1)]",
        "top_categories(tx, 2) returns only one category",
        "it asked the Counter for `n - 1` entries",
    ),
    Bug(
        "slugify",
        'words = re.findall(r"[a-z0-9]+", text.lower())',
        'words = re.findall(r"[a-z0-9]+", text)',
        "slugify('Rent & Utilities') returns 'ent-tilities'",
        "the text was not lower-cased before matching `[a-z0-9]+`, so capitals were dropped",
    ),
    Bug(
        "truncate",
        "if len(text) <= width:",
        "if len(text) < width:",
        "truncate('abcdef', 6) returns 'abc...' although the text fits",
        "text exactly `width` long was cut because the check used `<`",
    ),
]

LEDGER_FEATURES = [
    Feature(
        "Add a `percent_of(part, whole)` helper to ledger/money.py that returns the share as a "
        "float percentage rounded to one decimal (0.0 when whole is 0), with a test.",
        "ledger/money.py",
        "    return [base + 1 if i < extra else base for i in range(parts)]\n",
        "\n\ndef percent_of(part: int, whole: int) -> float:\n"
        '    """Share of ``part`` in ``whole`` in percent, one decimal; 0.0 for an empty whole."""\n'  # noqa: E501
        "    if whole == 0:\n        return 0.0\n    return round(part * 100 / whole, 1)\n",
        "tests/test_percent.py",
        _py_test(
            "from ledger.money import percent_of",
            "def test_percent_of():\n    assert percent_of(1, 3) == 33.3\n"
            "    assert percent_of(5, 0) == 0.0\n",
        ),
        "Added `percent_of` to ledger/money.py (0.0 for a zero whole) and "
        "tests/test_percent.py; the suite passes.",
    ),
    Feature(
        "Accounts need a `transfer(other, cents)` method that withdraws from this account and "
        "deposits into the other. Please add it with a test.",
        "ledger/accounts.py",
        '        self.history.append(("withdraw", cents))\n',
        '\n    def transfer(self, other: "Account", cents: int) -> None:\n'
        "        self.withdraw(cents)\n        other.deposit(cents)\n",
        "tests/test_transfer.py",
        _py_test(
            "from ledger.accounts import Account",
            'def test_transfer_moves_money():\n    a, b = Account("a", balance=100), Account("b")\n'
            "    a.transfer(b, 40)\n    assert (a.balance, b.balance) == (60, 40)\n",
        ),
        "Added `Account.transfer`, which reuses withdraw and deposit (so overdrafts still "
        "raise), plus tests/test_transfer.py. All tests pass.",
    ),
    Feature(
        "Add an `average(transactions)` function to ledger/report.py returning the mean amount "
        "in cents as an int (0 for no transactions), and test it.",
        "ledger/report.py",
        '    return sum(t["cents"] for t in transactions)\n',
        "\n\ndef average(transactions: list[dict]) -> int:\n"
        "    if not transactions:\n        return 0\n"
        "    return round(total(transactions) / len(transactions))\n",
        "tests/test_average.py",
        _py_test(
            "from ledger.report import average",
            'def test_average():\n    assert average([{"cents": 100}, {"cents": 201}]) == 150\n'
            "    assert average([]) == 0\n",
        ),
        "Added `average` to ledger/report.py (rounded mean in cents, 0 for an empty list) "
        "with tests/test_average.py; tests pass.",
    ),
    Feature(
        "I need a `title_case(text)` helper in ledger/textutil.py that capitalises every word, "
        "for category headings. Add it with a test please.",
        "ledger/textutil.py",
        "    return text[: width - len(suffix)] + suffix\n",
        "\n\ndef title_case(text: str) -> str:\n"
        '    return " ".join(word.capitalize() for word in text.split())\n',
        "tests/test_title_case.py",
        _py_test(
            "from ledger.textutil import title_case",
            'def test_title_case():\n    assert title_case("home  office rent") == '
            '"Home Office Rent"\n',
        ),
        "Added `title_case` to ledger/textutil.py and tests/test_title_case.py. The suite passes.",
    ),
]

LEDGER = Project(
    name="ledger",
    kind="Python library, pytest",
    files=LEDGER_FILES,
    test_cmd="python3 -m pytest -q",
    test_one="python3 -m pytest -q {file}",
    wrong_test_cmd="python3 -m pytest -q test/",
    lint_cmd=None,
    run_cmd="python3 -m ledger data/transactions.csv",
    wrong_run_cmd="python3 ledger/__main__.py data/transactions.csv",
    run_ask="Run the ledger CLI on data/transactions.csv and tell me the totals per category.",
    funcs=LEDGER_FUNCS,
    bugs=LEDGER_BUGS,
    features=LEDGER_FEATURES,
    renames=[
        ("format_cents", "cents_to_str"),
        ("by_category", "totals_by_category"),
        ("slugify", "make_slug"),
        ("split_evenly", "split_cents"),
    ],
)


# =========================================================================== tally (Node.js)

TALLY_STATS = """\
'use strict';

function sum(values) {
  return values.reduce((acc, v) => acc + v, 0);
}

function mean(values) {
  if (values.length === 0) return 0;
  return sum(values) / values.length;
}

function median(values) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function spread(values) {
  if (values.length === 0) return 0;
  return Math.max(...values) - Math.min(...values);
}

module.exports = { sum, mean, median, spread };
"""

TALLY_PARSE = """\
'use strict';

function parseLine(line, delimiter = ',') {
  return line.split(delimiter).map((cell) => cell.trim());
}

function parseCsv(text, delimiter = ',') {
  const lines = text.split('\\n').filter((l) => l.trim() !== '');
  const header = parseLine(lines[0], delimiter);
  return lines.slice(1).map((line) => {
    const cells = parseLine(line, delimiter);
    const row = {};
    header.forEach((name, i) => {
      row[name] = cells[i];
    });
    return row;
  });
}

function column(rows, name) {
  return rows.map((r) => Number(r[name])).filter((n) => !Number.isNaN(n));
}

module.exports = { parseLine, parseCsv, column };
"""

TALLY_FORMAT = """\
'use strict';

function padRight(text, width) {
  const s = String(text);
  return s.length >= width ? s : s + ' '.repeat(width - s.length);
}

function formatNumber(n, digits = 2) {
  return Number(n).toFixed(digits);
}

function formatTable(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) => r.map((cell, i) => padRight(cell, widths[i])).join('  ').trimEnd())
    .join('\\n');
}

module.exports = { padRight, formatNumber, formatTable };
"""

TALLY_CLI = """\
'use strict';

const fs = require('node:fs');
const { parseCsv, column } = require('./parse');
const stats = require('./stats');
const { formatNumber, formatTable } = require('./format');

function parseArgs(argv) {
  const opts = { file: null, column: 'amount', delimiter: ',' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--column') opts.column = argv[++i];
    else if (argv[i] === '--delimiter') opts.delimiter = argv[++i];
    else opts.file = argv[i];
  }
  return opts;
}

function run(argv) {
  const opts = parseArgs(argv);
  if (!opts.file) throw new Error('usage: tally FILE [--column NAME] [--delimiter D]');
  const rows = parseCsv(fs.readFileSync(opts.file, 'utf8'), opts.delimiter);
  const values = column(rows, opts.column);
  // TODO: let the user choose which statistics to print
  return formatTable([
    ['count', values.length],
    ['sum', formatNumber(stats.sum(values))],
    ['mean', formatNumber(stats.mean(values))],
    ['median', formatNumber(stats.median(values))],
  ]);
}

module.exports = { parseArgs, run };
"""

TALLY_BIN = """\
#!/usr/bin/env node
'use strict';

const { run } = require('../src/cli');

try {
  console.log(run(process.argv.slice(2)));
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
"""

TALLY_LINT = """\
'use strict';
// Tiny linter: 'use strict' first, no `var`, no trailing whitespace.
const fs = require('node:fs');
const path = require('node:path');

let problems = 0;
for (const dir of ['src', 'bin']) {
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.js'))) {
    const file = path.join(dir, name);
    const lines = fs.readFileSync(file, 'utf8').split('\\n');
    if (!lines.some((l) => l === "'use strict';")) {
      console.log(`${file}:1: missing 'use strict'`);
      problems++;
    }
    lines.forEach((line, i) => {
      if (/\\bvar\\s/.test(line)) {
        console.log(`${file}:${i + 1}: use let or const instead of var`);
        problems++;
      }
      if (/\\s+$/.test(line)) {
        console.log(`${file}:${i + 1}: trailing whitespace`);
        problems++;
      }
    });
  }
}
console.log(problems ? `${problems} problem(s)` : 'lint ok');
process.exit(problems ? 1 : 0);
"""

TALLY_TEST_STATS = """\
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { sum, mean, median, spread } = require('../src/stats');

test('sum adds values', () => {
  assert.equal(sum([1, 2, 3.5]), 6.5);
  assert.equal(sum([]), 0);
});

test('mean of values', () => {
  assert.equal(mean([2, 4, 9]), 5);
  assert.equal(mean([]), 0);
});

test('median sorts numerically', () => {
  assert.equal(median([10, 9, 2]), 9);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

test('spread is max minus min', () => {
  assert.equal(spread([5, 1, 8]), 7);
});
"""

TALLY_TEST_PARSE = """\
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { parseLine, parseCsv, column } = require('../src/parse');

test('parseLine trims cells', () => {
  assert.deepEqual(parseLine(' a , b,c '), ['a', 'b', 'c']);
});

test('parseCsv maps rows to the header', () => {
  const rows = parseCsv('item,amount\\npen,2\\nink,0\\n');
  assert.deepEqual(rows, [
    { item: 'pen', amount: '2' },
    { item: 'ink', amount: '0' },
  ]);
});

test('column keeps zeros and drops non-numbers', () => {
  const rows = [{ amount: '0' }, { amount: 'x' }, { amount: '3' }];
  assert.deepEqual(column(rows, 'amount'), [0, 3]);
});
"""

TALLY_TEST_FORMAT = """\
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { padRight, formatNumber, formatTable } = require('../src/format');

test('padRight pads to width', () => {
  assert.equal(padRight('ab', 4), 'ab  ');
  assert.equal(padRight('abcde', 3), 'abcde');
});

test('formatNumber uses the digits argument', () => {
  assert.equal(formatNumber(3.14159, 3), '3.142');
  assert.equal(formatNumber(2), '2.00');
});

test('formatTable aligns columns', () => {
  assert.equal(formatTable([['a', 1], ['bbb', 22]]), 'a    1\\nbbb  22');
});
"""

TALLY_TEST_CLI = """\
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { parseArgs } = require('../src/cli');

test('parseArgs reads options after the file', () => {
  assert.deepEqual(parseArgs(['data.csv', '--column', 'price']), {
    file: 'data.csv',
    column: 'price',
    delimiter: ',',
  });
});

test('parseArgs delimiter', () => {
  assert.equal(parseArgs(['--delimiter', ';', 'x.csv']).delimiter, ';');
});
"""

TALLY_FILES = {
    "README.md": "# tally\n\nSummary statistics for a column of a CSV file.\n\n## Usage\n\n"
    "    node bin/tally.js data/sample.csv --column amount\n\n## Development\n\n"
    "    npm test        # node --test\n    npm run lint\n",
    "package.json": '{\n  "name": "tally",\n  "version": "0.3.0",\n  "private": true,\n'
    '  "bin": { "tally": "bin/tally.js" },\n  "scripts": {\n    "test": "node --test",\n'
    '    "lint": "node scripts/lint.js"\n  }\n}\n',
    ".gitignore": "node_modules/\ncoverage/\n",
    "bin/tally.js": TALLY_BIN,
    "src/stats.js": TALLY_STATS,
    "src/parse.js": TALLY_PARSE,
    "src/format.js": TALLY_FORMAT,
    "src/cli.js": TALLY_CLI,
    "scripts/lint.js": TALLY_LINT,
    "test/stats.test.js": TALLY_TEST_STATS,
    "test/parse.test.js": TALLY_TEST_PARSE,
    "test/format.test.js": TALLY_TEST_FORMAT,
    "test/cli.test.js": TALLY_TEST_CLI,
    "data/sample.csv": "date,item,amount\n2024-03-01,coffee,3.20\n2024-03-01,bagel,2.10\n"
    "2024-03-02,coffee,3.20\n2024-03-04,lunch,11.50\n2024-03-05,coffee,0\n",
}


def _js_test(imports: str, body: str) -> str:
    return (
        "'use strict';\n\nconst test = require('node:test');\n"
        f"const assert = require('node:assert/strict');\n{imports}\n\n{body}"
    )


TALLY_FUNCS = [
    Func(
        "sum",
        "src/stats.js",
        "reduces the values with `+` starting from 0",
        "test/stats.test.js",
        _js_test(
            "const { sum } = require('../src/stats');",
            "test('sum of negatives', () => {\n  assert.equal(sum([-1, -2]), -3);\n});\n",
        ),
    ),
    Func(
        "mean",
        "src/stats.js",
        "returns 0 for an empty list, otherwise sum divided by the count",
        "test/stats.test.js",
        _js_test(
            "const { mean } = require('../src/stats');",
            "test('mean of one value', () => {\n  assert.equal(mean([7]), 7);\n});\n",
        ),
    ),
    Func(
        "median",
        "src/stats.js",
        "sorts a copy numerically and returns the middle value, or the average of the two "
        "middle values for an even count",
        "test/stats.test.js",
        _js_test(
            "const { median } = require('../src/stats');",
            "test('median does not mutate its input', () => {\n  const v = [3, 1, 2];\n"
            "  assert.equal(median(v), 2);\n  assert.deepEqual(v, [3, 1, 2]);\n});\n",
        ),
    ),
    Func(
        "spread",
        "src/stats.js",
        "returns max minus min, or 0 for an empty list",
        "test/stats.test.js",
        _js_test(
            "const { spread } = require('../src/stats');",
            "test('spread of equal values is 0', () => {\n  assert.equal(spread([4, 4]), 0);\n"
            "  assert.equal(spread([]), 0);\n});\n",
        ),
    ),
    Func(
        "parseLine",
        "src/parse.js",
        "splits a line on the delimiter (comma by default) and trims every cell",
        "test/parse.test.js",
        _js_test(
            "const { parseLine } = require('../src/parse');",
            "test('parseLine with semicolons', () => {\n"
            "  assert.deepEqual(parseLine('a; b', ';'), ['a', 'b']);\n});\n",
        ),
    ),
    Func(
        "parseCsv",
        "src/parse.js",
        "drops blank lines, takes the first line as header and maps every other line to an "
        "object keyed by the header names",
        "test/parse.test.js",
        _js_test(
            "const { parseCsv } = require('../src/parse');",
            "test('parseCsv skips blank lines', () => {\n"
            "  assert.deepEqual(parseCsv('a\\n\\n1\\n'), [{ a: '1' }]);\n});\n",
        ),
    ),
    Func(
        "column",
        "src/parse.js",
        "converts one field of every row with Number() and drops the NaN results",
        "test/parse.test.js",
        _js_test(
            "const { column } = require('../src/parse');",
            "test('column of a missing field is empty', () => {\n"
            "  assert.deepEqual(column([{ a: '1' }], 'b'), []);\n});\n",
        ),
    ),
    Func(
        "padRight",
        "src/format.js",
        "converts to a string and appends spaces up to `width`; longer strings are unchanged",
        "test/format.test.js",
        _js_test(
            "const { padRight } = require('../src/format');",
            "test('padRight of a number', () => {\n  assert.equal(padRight(7, 3), '7  ');\n});\n",
        ),
    ),
    Func(
        "formatNumber",
        "src/format.js",
        "formats with toFixed, two digits unless told otherwise",
        "test/format.test.js",
        _js_test(
            "const { formatNumber } = require('../src/format');",
            "test('formatNumber of a numeric string', () => {\n"
            "  assert.equal(formatNumber('1.005', 1), '1.0');\n});\n",
        ),
    ),
    Func(
        "formatTable",
        "src/format.js",
        "computes the widest cell of every column, pads each cell, joins with two spaces and "
        "trims the line ends",
        "test/format.test.js",
        _js_test(
            "const { formatTable } = require('../src/format');",
            "test('formatTable single row', () => {\n"
            "  assert.equal(formatTable([['x', 'y']]), 'x  y');\n});\n",
        ),
    ),
    Func(
        "parseArgs",
        "src/cli.js",
        "walks argv: `--column` and `--delimiter` consume the next argument, anything else is "
        "the input file",
        "test/cli.test.js",
        _js_test(
            "const { parseArgs } = require('../src/cli');",
            "test('parseArgs defaults', () => {\n  const o = parseArgs(['f.csv']);\n"
            "  assert.equal(o.column, 'amount');\n  assert.equal(o.delimiter, ',');\n});\n",
        ),
    ),
]

TALLY_BUGS = [
    Bug(
        "sum",
        "return values.reduce((acc, v) => acc + v, 0);",
        "return values.reduce((acc, v) => acc + v, 1);",
        "sum([]) returns 1 and every total is one too high",
        "the reduce started from 1 instead of 0",
    ),
    Bug(
        "mean",
        "return sum(values) / values.length;",
        "return sum(values) / (values.length - 1);",
        "mean([2, 4, 9]) gives 7.5 instead of 5",
        "it divided by `length - 1`",
    ),
    Bug(
        "median",
        "const sorted = [...values].sort((a, b) => a - b);",
        "const sorted = [...values].sort();",
        "median([10, 9, 2]) returns 2",
        "`sort()` without a comparator sorts numbers as strings",
    ),
    Bug(
        "spread",
        "return Math.max(...values) - Math.min(...values);",
        "return Math.max(...values) - values[0];",
        "spread([5, 1, 8]) returns 3",
        "it subtracted the first value instead of the minimum",
    ),
    Bug(
        "parseLine",
        "return line.split(delimiter).map((cell) => cell.trim());",
        "return line.split(delimiter);",
        "cells keep their surrounding spaces, so ' a ' never matches 'a'",
        "parseLine no longer trimmed the cells",
    ),
    Bug(
        "column",
        "return rows.map((r) => Number(r[name])).filter((n) => !Number.isNaN(n));",
        "return rows.map((r) => Number(r[name])).filter((n) => n);",
        "rows whose amount is 0 disappear from the count",
        "the filter `(n) => n` dropped zeros as well as NaN",
    ),
    Bug(
        "padRight",
        "return s.length >= width ? s : s + ' '.repeat(width - s.length);",
        "return s.length >= width ? s : s + ' '.repeat(width - s.length - 1);",
        "the table columns are misaligned by one space",
        "padRight padded one space short",
    ),
    Bug(
        "formatNumber",
        "return Number(n).toFixed(digits);",
        "return Number(n).toFixed(2);",
        "formatNumber(3.14159, 3) returns '3.14'",
        "it ignored the `digits` argument and always used 2",
    ),
    Bug(
        "parseArgs",
        "if (argv[i] === '--column') opts.column = argv[++i];",
        "if (argv[i] === '--column') opts.column = argv[i + 1];",
        "`tally data.csv --column price` tries to read a file called price",
        "`--column` read the next argument without skipping it, so it was also taken as the file",
    ),
]

TALLY_FEATURES = [
    Feature(
        "Add a `mode(values)` function to src/stats.js that returns the most frequent value "
        "(the smallest on ties, 0 for an empty list) and export it. Add a test.",
        "src/stats.js",
        "module.exports = { sum, mean, median, spread };\n",
        "function mode(values) {\n  const counts = new Map();\n"
        "  for (const v of values) counts.set(v, (counts.get(v) || 0) + 1);\n"
        "  let best = 0;\n  let bestCount = 0;\n"
        "  for (const [v, c] of [...counts].sort((a, b) => a[0] - b[0])) {\n"
        "    if (c > bestCount) {\n      best = v;\n      bestCount = c;\n    }\n  }\n"
        "  return best;\n}\n\nmodule.exports = { sum, mean, median, spread, mode };\n",
        "test/mode.test.js",
        _js_test(
            "const { mode } = require('../src/stats');",
            "test('mode picks the most frequent', () => {\n"
            "  assert.equal(mode([3, 1, 3, 2]), 3);\n  assert.equal(mode([2, 1]), 1);\n"
            "  assert.equal(mode([]), 0);\n});\n",
        ),
        "Added `mode` to src/stats.js (smallest value wins ties, 0 when empty) and "
        "test/mode.test.js. `npm test` passes.",
        replaces=True,
    ),
    Feature(
        "Add `formatPercent(fraction, digits = 1)` to src/format.js: 0.256 -> '25.6%'. Export "
        "it and cover it with a test.",
        "src/format.js",
        "module.exports = { padRight, formatNumber, formatTable };\n",
        "function formatPercent(fraction, digits = 1) {\n"
        "  return `${(fraction * 100).toFixed(digits)}%`;\n}\n\n"
        "module.exports = { padRight, formatNumber, formatTable, formatPercent };\n",
        "test/percent.test.js",
        _js_test(
            "const { formatPercent } = require('../src/format');",
            "test('formatPercent', () => {\n  assert.equal(formatPercent(0.256), '25.6%');\n"
            "  assert.equal(formatPercent(1, 0), '100%');\n});\n",
        ),
        "Added `formatPercent` to src/format.js with test/percent.test.js; all tests pass.",
        replaces=True,
    ),
    Feature(
        "The stats module needs a `variance(values)` (population variance, 0 for an empty "
        "list). Please implement and test it.",
        "src/stats.js",
        "module.exports = { sum, mean, median, spread };\n",
        "function variance(values) {\n  if (values.length === 0) return 0;\n"
        "  const m = mean(values);\n  return mean(values.map((v) => (v - m) ** 2));\n}\n\n"
        "module.exports = { sum, mean, median, spread, variance };\n",
        "test/variance.test.js",
        _js_test(
            "const { variance } = require('../src/stats');",
            "test('variance', () => {\n  assert.equal(variance([2, 4, 4, 4, 5, 5, 7, 9]), 4);\n"
            "  assert.equal(variance([]), 0);\n});\n",
        ),
        "Implemented population `variance` in src/stats.js (reusing mean) and added "
        "test/variance.test.js. Tests pass.",
        replaces=True,
    ),
]

TALLY = Project(
    name="tally",
    kind="Node.js CLI, node:test",
    files=TALLY_FILES,
    test_cmd="npm test",
    test_one="node --test {file}",
    wrong_test_cmd="npm run test:unit",
    lint_cmd="npm run lint",
    run_cmd="node bin/tally.js data/sample.csv --column amount",
    wrong_run_cmd="npm start -- data/sample.csv",
    run_ask="Run tally on data/sample.csv for the amount column and report the mean.",
    funcs=TALLY_FUNCS,
    bugs=TALLY_BUGS,
    features=TALLY_FEATURES,
    renames=[
        ("formatTable", "renderTable"),
        ("parseLine", "splitLine"),
        ("padRight", "padEnd"),
        ("formatNumber", "toFixedString"),
    ],
    lint_bugs=[
        LintBug(
            "src/stats.js",
            "  const mid = Math.floor(sorted.length / 2);",
            "  var mid = Math.floor(sorted.length / 2);",
            "use let or const instead of var",
        ),
        LintBug(
            "src/format.js",
            "  const s = String(text);",
            "  const s = String(text);   ",
            "trailing whitespace",
        ),
        LintBug(
            "src/parse.js",
            "    const row = {};",
            "    var row = {};",
            "use let or const instead of var",
        ),
    ],
    source_glob="**/*.js",
    include="*.js",
    test_dir="test",
)


# =========================================================================== relkit (shell)

RELKIT_COMMON = """\
# Shared helpers for the relkit scripts. Source it; do not run it.

log() {
  printf '[relkit] %s\\n' "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

trim() {
  local s="$1"
  s="${s#"${s%%[![:space:]]*}"}"
  s="${s%"${s##*[![:space:]]}"}"
  printf '%s' "$s"
}
"""

RELKIT_SEMVER = """\
#!/usr/bin/env bash
# Bump a semantic version: semver.sh VERSION major|minor|patch
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

bump() {
  local version="$1" part="$2" major minor patch
  IFS=. read -r major minor patch <<< "$version"
  case "$part" in
    major) echo "$((major + 1)).0.0" ;;
    minor) echo "$major.$((minor + 1)).0" ;;
    patch) echo "$major.$minor.$((patch + 1))" ;;
    *) die "unknown part: $part" ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  [[ $# -eq 2 ]] || die "usage: semver.sh VERSION major|minor|patch"
  bump "$1" "$2"
fi
"""

RELKIT_ENVCHECK = """\
#!/usr/bin/env bash
# Check that the variables listed in a file are set: envcheck.sh FILE
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

missing_vars() {
  local file="$1" name
  while IFS= read -r name; do
    name="$(trim "$name")"
    [[ -z "$name" || "$name" == \\#* ]] && continue
    if [[ -z "${!name:-}" ]]; then
      echo "$name"
    fi
  done < "$file"
  return 0
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  [[ $# -eq 1 ]] || die "usage: envcheck.sh FILE"
  missing="$(missing_vars "$1")"
  if [[ -n "$missing" ]]; then
    die "missing: $(echo $missing)"
  fi
  log "all variables set"
fi
"""

RELKIT_CHANGELOG = """\
#!/usr/bin/env bash
# Print a changelog section from notes on stdin: changelog.sh VERSION
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

section() {
  local version="$1" line
  echo "## $version"
  echo
  while IFS= read -r line; do
    line="$(trim "$line")"
    # TODO: group notes by type (fix, feat, docs)
    if [[ -n "$line" ]]; then
      echo "- $line"
    fi
  done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  [[ $# -eq 1 ]] || die "usage: changelog.sh VERSION"
  section "$1"
fi
"""

RELKIT_RUNNER = """\
#!/usr/bin/env bash
# Minimal test runner: every function test_* defined in tests/test_*.sh is one test.
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

assert_eq() {
  if [[ "$1" != "$2" ]]; then
    printf '    expected: %q\\n    actual:   %q\\n' "$2" "$1"
    return 1
  fi
}

for file in tests/test_*.sh; do
  source "$file"
done
set +eu

pass=0
fail=0
for t in $(declare -F | awk '{print $3}' | grep '^test_'); do
  ( set -e; "$t" )
  if [[ $? -eq 0 ]]; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $t"
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
"""

RELKIT_TEST_SEMVER = """\
source bin/semver.sh

test_bump_patch() {
  assert_eq "$(bump 1.2.3 patch)" "1.2.4"
}

test_bump_minor_resets_patch() {
  assert_eq "$(bump 1.2.3 minor)" "1.3.0"
}

test_bump_major_resets_minor_and_patch() {
  assert_eq "$(bump 1.2.3 major)" "2.0.0"
}
"""

RELKIT_TEST_ENVCHECK = """\
source bin/envcheck.sh

test_missing_vars_lists_unset_names() {
  printf 'RELKIT_SET\\n# comment\\n\\n  RELKIT_UNSET  \\n' > /tmp/relkit-vars.$$
  assert_eq "$(RELKIT_SET=1 missing_vars /tmp/relkit-vars.$$)" "RELKIT_UNSET"
}
"""

RELKIT_TEST_CHANGELOG = """\
source bin/changelog.sh

test_section_lists_notes() {
  assert_eq "$(printf 'fix a\\n\\n  add b  \\n' | section 1.0.0)" "$(printf '## 1.0.0\\n\\n- fix a\\n- add b')"
}

test_trim_both_ends() {
  assert_eq "$(trim '  x y  ')" "x y"
}
"""  # noqa: E501

RELKIT_MAKEFILE = """\
SHELL := bash
SCRIPTS := $(wildcard bin/*.sh lib/*.sh tests/*.sh)

.PHONY: test lint check

test:
\tbash tests/run.sh

lint:
\t@for f in $(SCRIPTS); do bash -n "$$f" || exit 1; done; echo "syntax ok"

check: lint test
"""

RELKIT_FILES = {
    "README.md": "# relkit\n\nSmall bash scripts for cutting releases: version bumps, "
    "environment checks and changelog sections.\n\n- `bin/semver.sh VERSION major|minor|patch`\n"
    "- `bin/envcheck.sh FILE`\n- `bin/changelog.sh VERSION < notes.txt`\n\n"
    "See docs/usage.md and docs/release.md. Run `make check` before a release.\n",
    "VERSION": "1.4.2\n",
    "Makefile": RELKIT_MAKEFILE,
    "lib/common.sh": RELKIT_COMMON,
    "bin/semver.sh": RELKIT_SEMVER,
    "bin/envcheck.sh": RELKIT_ENVCHECK,
    "bin/changelog.sh": RELKIT_CHANGELOG,
    "tests/run.sh": RELKIT_RUNNER,
    "tests/test_semver.sh": RELKIT_TEST_SEMVER,
    "tests/test_envcheck.sh": RELKIT_TEST_ENVCHECK,
    "tests/test_changelog.sh": RELKIT_TEST_CHANGELOG,
    "release.env": "# variables a release needs\nRELEASE_TOKEN\nRELEASE_BRANCH\n",
    "docs/usage.md": "# Usage\n\n## semver.sh\n\n    bash bin/semver.sh 1.4.2 minor   # 1.5.0\n\n"
    "## envcheck.sh\n\nLists the variables of a file (one per line, `#` comments) that are "
    "unset; exits 1 when any is missing.\n\n## changelog.sh\n\nReads notes on stdin and prints "
    "a `## VERSION` section with one bullet per non-empty line.\n",
    "docs/release.md": "# Release checklist\n\n1. `make check`\n"
    "2. `bash bin/envcheck.sh release.env`\n3. Bump VERSION with `bin/semver.sh`.\n"
    "4. Prepend the changelog section.\n5. Tag the release.\n",
}


def _sh_test(source: str, body: str) -> str:
    return f"source {source}\n\n{body}"


RELKIT_FUNCS = [
    Func(
        "bump",
        "bin/semver.sh",
        "splits VERSION on dots with `IFS=. read` and increments the requested part, "
        "resetting the lower parts; an unknown part calls `die`",
        "tests/test_semver.sh",
        _sh_test(
            "bin/semver.sh",
            'test_bump_patch_from_zero() {\n  assert_eq "$(bump 0.0.0 patch)" "0.0.1"\n}\n',
        ),
    ),
    Func(
        "missing_vars",
        "bin/envcheck.sh",
        "reads the file line by line, trims each name, skips blanks and `#` comments and "
        "prints every name whose variable is unset or empty (indirect expansion `${!name:-}`)",
        "tests/test_envcheck.sh",
        _sh_test(
            "bin/envcheck.sh",
            "test_missing_vars_all_set() {\n  printf 'HOME\\n' > /tmp/relkit-home.$$\n"
            '  assert_eq "$(missing_vars /tmp/relkit-home.$$)" ""\n}\n',
        ),
    ),
    Func(
        "section",
        "bin/changelog.sh",
        "prints `## VERSION`, a blank line and one `- ` bullet per non-empty trimmed line of stdin",
        "tests/test_changelog.sh",
        _sh_test(
            "bin/changelog.sh",
            "test_section_empty_input() {\n"
            "  assert_eq \"$(printf '' | section 2.0.0)\" \"$(printf '## 2.0.0\\n')\"\n}\n",
        ),
    ),
    Func(
        "trim",
        "lib/common.sh",
        "strips leading and trailing whitespace with two parameter expansions and prints "
        "the result without a newline",
        "tests/test_changelog.sh",
        _sh_test(
            "lib/common.sh",
            'test_trim_tabs() {\n  assert_eq "$(trim $\'\\tword\\t\')" "word"\n}\n',
        ),
    ),
    Func(
        "die",
        "lib/common.sh",
        "logs `error: MESSAGE` to stderr through `log` and exits with status 1",
        "tests/test_semver.sh",
        _sh_test(
            "lib/common.sh",
            'test_die_exits_1() {\n  assert_eq "$( (die boom) 2>/dev/null; echo $?)" "1"\n}\n',
        ),
    ),
]

RELKIT_BUGS = [
    Bug(
        "bump",
        'minor) echo "$major.$((minor + 1)).0" ;;',
        'minor) echo "$major.$((minor + 1)).$patch" ;;',
        "`bin/semver.sh 1.2.3 minor` prints 1.3.3 instead of 1.3.0",
        "the minor bump kept the patch number instead of resetting it to 0",
    ),
    Bug(
        "bump",
        'major) echo "$((major + 1)).0.0" ;;',
        'major) echo "$((major + 1)).$minor.0" ;;',
        "a major bump of 1.2.3 gives 2.2.0",
        "the major bump kept the minor number",
    ),
    Bug(
        "missing_vars",
        '[[ -z "$name" || "$name" == \\#* ]] && continue',
        '[[ -z "$name" ]] && continue',
        "envcheck reports the comment lines of release.env as missing variables",
        "comment lines were no longer skipped",
    ),
    Bug(
        "section",
        'echo "- $line"',
        'echo "* $line"',
        "changelog sections use `*` bullets, but the docs and tests expect `-`",
        "section printed `* ` bullets",
    ),
    Bug(
        "trim",
        's="${s%"${s##*[![:space:]]}"}"\n  printf \'%s\' "$s"',
        "printf '%s' \"$s\"",
        "trim leaves trailing spaces, so changelog lines end in blanks",
        "the trailing-whitespace expansion in `trim` was broken",
    ),
]

RELKIT_FEATURES = [
    Feature(
        "Add a `prerelease` part to bin/semver.sh: `bump 1.2.3 prerelease` should give "
        "1.2.4-rc.1. Add a test to the shell test suite.",
        "bin/semver.sh",
        '    patch) echo "$major.$minor.$((patch + 1))" ;;\n',
        '    prerelease) echo "$major.$minor.$((patch + 1))-rc.1" ;;\n',
        "tests/test_prerelease.sh",
        _sh_test(
            "bin/semver.sh",
            'test_bump_prerelease() {\n  assert_eq "$(bump 1.2.3 prerelease)" "1.2.4-rc.1"\n}\n',
        ),
        "`bump` now accepts `prerelease` (next patch with `-rc.1`); tests/test_prerelease.sh "
        "covers it and `make test` passes.",
    ),
    Feature(
        "Add an `upper` helper to lib/common.sh that prints its argument in upper case, and a "
        "test for it.",
        "lib/common.sh",
        "  printf '%s' \"$s\"\n}\n",
        "\nupper() {\n  printf '%s' \"${1^^}\"\n}\n",
        "tests/test_upper.sh",
        _sh_test(
            "lib/common.sh",
            'test_upper() {\n  assert_eq "$(upper rc1-beta)" "RC1-BETA"\n}\n',
        ),
        "Added `upper` (bash `${1^^}`) to lib/common.sh and tests/test_upper.sh; all tests pass.",
    ),
    Feature(
        "Make `changelog.sh` accept an optional date: `section VERSION DATE` should print "
        "`## VERSION - DATE`. Keep the old form working and add a test.",
        "bin/changelog.sh",
        '  local version="$1" line\n  echo "## $version"\n',
        '  local version="$1" date="${2:-}" line\n  echo "## $version${date:+ - $date}"\n',
        "tests/test_changelog_date.sh",
        _sh_test(
            "bin/changelog.sh",
            "test_section_with_date() {\n"
            "  assert_eq \"$(printf 'x\\n' | section 1.0.0 2024-05-01 | head -1)\" "
            '"## 1.0.0 - 2024-05-01"\n}\n',
        ),
        "`section` takes an optional DATE and prints `## VERSION - DATE`; without it the "
        "heading is unchanged. Added tests/test_changelog_date.sh; `make test` passes.",
        replaces=True,
    ),
]

RELKIT = Project(
    name="relkit",
    kind="bash scripts, Makefile, docs",
    files=RELKIT_FILES,
    test_cmd="make test",
    test_one="bash tests/run.sh",
    wrong_test_cmd="bash tests/test.sh",
    lint_cmd="make lint",
    run_cmd="bash bin/semver.sh 1.4.2 minor",
    wrong_run_cmd="./bin/semver.sh 1.4.2 minor",
    run_ask="What does bin/semver.sh print for a minor bump of the current VERSION (1.4.2)? "
    "Run it.",
    funcs=RELKIT_FUNCS,
    bugs=RELKIT_BUGS,
    features=RELKIT_FEATURES,
    renames=[("die", "fatal"), ("missing_vars", "unset_vars"), ("trim", "strip_spaces")],
    lint_bugs=[
        LintBug("bin/semver.sh", "  esac\n}", "  esac\n", "syntax error: unexpected end of file"),
        LintBug(
            "bin/changelog.sh",
            '      echo "- $line"\n    fi\n',
            '      echo "- $line"\n',
            "syntax error near unexpected token `done'",
        ),
    ],
    source_glob="**/*.sh",
    include="*.sh",
    test_dir="tests",
)

PROJECTS = [LEDGER, TALLY, RELKIT]
