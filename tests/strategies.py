"""Hypothesis strategies for gateway lines: well-formed lines of every shape, and mutations."""

import string

from hypothesis import strategies as st

from tests.conftest import golden_lines

KEYS = [
    "s",
    "m",
    "x",
    "mod",
    "cmd",
    "rule",
    "action",
    "routes",
    "subject",
    "header.from",
    "kscore.is_bulkscore",
    "x-header",
    "to",
    "from",
    "relay",
    "stat",
    "ctladdr",
    "STARTTLS",
]
VALUE_CHARS = string.ascii_letters + string.digits + "=,<>@/:.-_+[]()*"


def _digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


rfc3339 = st.builds(
    lambda d, frac, off: f"{d}{frac}{off}",
    st.sampled_from(
        ["2022-02-20T08:35:00", "2021-12-31T23:59:59", "2024-02-29t00:00:00", "2022-13-01T00:00:00"]
    ),
    st.one_of(st.just(""), st.builds(lambda s: "." + s, st.text("0123456789", min_size=1, max_size=9))),
    st.sampled_from(["Z", "z", "-06:00", "+0530", "-0000"]),
)
bsd = st.builds(
    lambda m, d, c, frac: f"{m} {d} {c}{frac}",
    st.sampled_from(["Jan", "Feb", "Dec", "Jun"]),
    st.sampled_from([" 1", " 3", "13", "29", "30", "31", "7"]),
    st.sampled_from(["08:35:00", "23:59:59", "00:00:00"]),
    st.sampled_from(["", "", ".5", ".157", ".157994", ".157994123", "."]),
)
onbox = st.builds(
    lambda c, off: f"[2015-06-17 16:51:00{c} {off}]",
    st.sampled_from(["", ".354586"]),
    st.sampled_from(["-0700", "+00:00", "Z"]),
)
program = st.one_of(
    st.builds(lambda n: f"filter_instance{n}", st.integers(0, 12)),
    st.sampled_from(
        [
            "sendmail",
            "sm-mta",
            "sm-msp-queue",
            "queued-reinject",
            "queued-VoltageEncrypt",
            "postfix/smtpd",
            "sshd",
            "kernel",
        ]
    ),
)
tag = st.builds(
    lambda p, pid: f"{p}[{pid}]:" if pid is not None else f"{p}:",
    program,
    st.one_of(st.none(), st.integers(1, 99999)),
)
host = st.sampled_from(["mx1", "mx1.example.com", "10.0.0.5", "2001:db8::1", "-"])
# Some senders put a space after <PRI>; two are no header the grammar reads
pri = st.one_of(
    st.just(""),
    st.builds(lambda n, space: f"<{n}>{space}", st.integers(0, 999), st.sampled_from(["", " ", "  "])),
)

header = st.one_of(
    st.builds(lambda p, t, h, g: f"{p}{t} {h} {g} ", pri, rfc3339, host, tag),
    st.builds(lambda p, t, h, g: f"{p}{t} {h} {g} ", pri, bsd, host, tag),
    st.builds(lambda p, t: f"{p}{t} ", pri, onbox),
    st.builds(lambda p, g: f"{p}{g} ", pri, tag),
    st.builds(
        lambda p, t, h, a, i, b: f"<{p}>1 {t} {h} {a} {i} - - {b}",
        st.integers(0, 191),
        st.one_of(rfc3339, st.just("-")),
        host,
        st.sampled_from(["sendmail", "filter_instance1"]),
        st.sampled_from(["-", "123"]),
        # RFC 5424: MSG may open with a byte order mark; rsyslog's RFC 5424 format adds a space
        st.sampled_from(["", "\ufeff", " ", "\ufeff "]),
    ),
    st.just(""),
)

key = st.one_of(st.sampled_from(KEYS), st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,8}", fullmatch=True))
quoted = st.builds(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"',
    st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=20),
)
bare = st.text(VALUE_CHARS, min_size=1, max_size=20).filter(lambda v: not v.startswith('"'))
filter_value = st.one_of(st.just(""), bare, quoted)
filter_body = st.builds(
    lambda sev, pairs, tail, sep: sev + "".join(f"{sep}{k}={v}" for k, v in pairs) + tail,
    st.sampled_from(["rprt", "info", "note", "warn", "err", "rprtx", ""]),
    st.lists(st.tuples(key, filter_value), max_size=8),
    st.one_of(st.just(""), st.just(" free text tail"), st.just(" closed (limit=5)"), st.just("  ")),
    st.sampled_from([" ", "  ", "\t", " \u3000"]),  # the grammar separates with spaces only
)
sendmail_value = st.text(VALUE_CHARS + " ", max_size=24)
sendmail_body = st.builds(
    lambda qid, text, pairs: qid + ", ".join(([text] if text else []) + [f"{k}={v}" for k, v in pairs]),
    st.sampled_from(["", "21KEZ0kl021234: ", "w3HMWjG3039079:", "ABCDEFGH: "]),
    st.sampled_from(["", "Milter: data", "lost input channel from x [1.2.3.4]", "SYSERR(root): x, y"]),
    st.lists(st.tuples(key, sendmail_value), max_size=8),
)
well_formed_line = st.builds(lambda h, b: h + b, header, st.one_of(filter_body, sendmail_body))


@st.composite
def mutated_line(draw) -> str:
    """A real line with a few characters inserted, deleted or replaced, or cut short."""
    line = draw(st.sampled_from([line for line in golden_lines() if line]))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(line)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        char = draw(st.sampled_from([*' "=,:[]<>\\\x00\t\u00e9\ufffd\ufeff', "a", "1"]))
        if action == "insert":
            line = line[:where] + char + line[where:]
        elif action == "delete":
            line = line[:where] + line[where + 1 :]
        elif action == "replace":
            line = line[:where] + char + line[where + 1 :]
        else:
            line = line[:where]
    return line


# The shape the one-step path in GatewayParser takes: aimed at it so it is tested hard.
common_line = st.one_of(
    st.builds(
        lambda t, h, n, pid, b: f"{t} {h} filter_instance{n}{pid}: {b}",
        st.one_of(rfc3339, bsd),
        host,
        st.integers(0, 9),
        st.sampled_from(["", "[21074]"]),
        filter_body,
    ),
    st.builds(
        lambda t, h, p, b: f"{t} {h} {p}[31146]: {b}",
        st.one_of(rfc3339, bsd),
        host,
        st.sampled_from(["sendmail", "sm-mta", "queued-reinject"]),
        sendmail_body,
    ),
)
