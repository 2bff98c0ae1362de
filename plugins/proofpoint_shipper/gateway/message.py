"""One message being assembled from its gateway lines, and the record it becomes.

The record mirrors the PoD `message` event where the lines hold the data (`guid`, `ts`,
`connection`, `envelope`, `filter`, `msg`, `msgParts`), adds what only the logs know
(`deliveries` from sendmail, `lines`: how many and their time range) and says whether it is
`complete`. A field no line gave stays absent: nothing is invented.
"""

from dataclasses import dataclass, field

# Filter fields that address the line, not the message's content.
ADDRESSING = {"s", "m", "x", "mod", "cmd", "pid"}
# `mod=spam cmd=run` score fields → the PoD classifier names.
CLASSIFIERS = {
    "spamscore": "spam",
    "phishscore": "phish",
    "suspectscore": "suspect",
    "bulkscore": "bulk",
    "adultscore": "adult",
    "malwarescore": "malware",
    "ndrscore": "ndr",
    "impostorscore": "impostor",
    "lowpriorityscore": "lowpriority",
}
# `mod=mail cmd=attachment` fields → PoD msgParts fields.
PART_FIELDS = {
    "file": "labeledName",
    "mime": "detectedMime",
    "omime": "labeledMime",
    "type": "detectedExt",
    "oext": "labeledExt",
}
PART_FLAGS = {"corrupted": "isCorrupted", "protected": "isProtected", "virtual": "isVirtual"}
# Modules whose run lines are kept as they were written, under filter.modules.
PLAIN_MODULES = ("dmarc", "spf", "dkimv", "zerohour")
# Dispositions after which no delivery is to be expected.
NOTHING_TO_DELIVER = {"discard", "reject", "quarantine", "delete"}


@dataclass(slots=True)
class Message:
    host: str
    sid: str
    number: str  # m=
    connection: dict = field(default_factory=dict)  # shared with the session's other messages
    envelope_from: str | None = None
    recipients: list[str] = field(default_factory=list)
    filter: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    msg: dict = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)
    guid: str | None = None
    qids: list[str] = field(default_factory=list)  # every queue id a line of it named
    expected_deliveries: int | None = None  # sendmail's nrcpts, when the envelope is unknown
    deliveries: dict[tuple[str, str], dict] = field(default_factory=dict)  # (qid, to) → latest
    line_count: int = 0
    has_content: bool = False  # a line of the message itself, not only session lines
    first: str | None = None
    last: str | None = None

    def count_line(self, time: str | None) -> None:
        self.line_count += 1
        if time is not None:  # normalised times of one host compare as strings
            if self.last is None:  # and so is first
                self.first = self.last = time
            elif time > self.last:
                self.last = time
            elif time < self.first:
                self.first = time

    # -- filter lines --------------------------------------------------------------------------

    def take_filter(self, fields: dict) -> None:
        self.has_content = True
        # _get(fields, "mod") and "cmd", spelled out: this runs for most lines
        mod, cmd = fields.get("mod"), fields.get("cmd")
        if mod.__class__ is not str or not mod:
            mod = _text(mod)  # a repeated key: its last value, as for every field
        if cmd.__class__ is not str or not cmd:
            cmd = _text(cmd)
        handler = _HANDLERS.get((mod, cmd))
        if handler is not None:
            handler(self, fields)
        elif mod in PLAIN_MODULES:
            self.modules[mod] = {k: v for k, v in fields.items() if k not in ADDRESSING}
        elif "action" in fields:
            self._action(fields, mod)

    def _av(self, fields: dict) -> None:
        if name := _get(fields, "name"):
            self.modules.setdefault("av", {}).setdefault("virusNames", []).append(name)

    def _dispose(self, fields: dict) -> None:
        if action := _get(fields, "action"):
            self.filter["disposition"] = action
            self._action(fields, "session", final=True)

    def _send(self, fields: dict) -> None:
        self._claim(_get(fields, "qid"))

    def _env_from(self, fields: dict) -> None:
        self.envelope_from = _get(fields, "value") or self.envelope_from
        self._claim(_get(fields, "qid"))
        if host := _get(fields, "host"):
            self.connection.setdefault("host", host)

    def _env_rcpt(self, fields: dict) -> None:
        if value := _get(fields, "value"):
            self.recipients.append(value)

    def _helo(self, fields: dict) -> None:
        if value := _get(fields, "value"):
            self.connection["helo"] = value

    def _attachment(self, fields: dict) -> None:
        self.parts.append(_part(fields))

    def _msg(self, fields: dict) -> None:
        self.guid = _get(fields, "guid") or self.guid
        if qid := _get(fields, "qid"):
            self._claim(qid)
            self.filter["qid"] = qid  # the queue id PoD reports: the msg line's
        header = self.msg.setdefault("header", {})
        if "subject" in fields:
            header["subject"] = [_get(fields, "subject") or ""]
        if message_id := _get(fields, "hdr_mid"):
            header["message-id"] = [message_id]
        if (size := _number(fields.get("size"))) is not None:
            self.msg["sizeBytes"] = size
        if routes := [route for route in (_get(fields, "routes") or "").split(",") if route]:
            self.filter["routes"] = routes
        if _get(fields, "action"):
            self._action(fields, "mail")

    def _spam(self, fields: dict) -> None:
        scores: dict = {}
        if (overall := _number(fields.get("score"))) is not None:
            scores["overall"] = overall
        classifiers = {}
        for key, name in CLASSIFIERS.items():
            if key in fields and (number := _number(fields[key])) is not None:
                classifiers[name] = number
        if classifiers:
            scores["classifiers"] = classifiers
        spam = self.modules.setdefault("spam", {})
        if scores:
            spam["scores"] = scores
        for key in ("engine", "definitions"):
            if value := _get(fields, key):
                spam.setdefault("version", {})[key] = value

    def _action(self, fields: dict, module: str | None, final: bool = False) -> None:
        action = {"module": _get(fields, "module") or module}
        if rule := _get(fields, "rule"):
            action["rule"] = rule
        if verdict := _get(fields, "action"):
            action["action"] = verdict
        action["isFinal"] = final
        self.filter.setdefault("actions", []).append(action)

    def _claim(self, qid: str | None) -> None:
        if qid and qid not in self.qids:
            self.qids.append(qid)

    # -- sendmail lines ------------------------------------------------------------------------

    def take_sendmail(self, qid: str, fields: dict, time: str | None) -> None:
        self.has_content = True
        recipients = _addresses(fields.get("to"))
        if not recipients:
            if nrcpts := _number(fields.get("nrcpts")):
                self.expected_deliveries = nrcpts
            return
        delivery = {key: value for key in ("stat", "dsn", "relay", "delay") if (value := _get(fields, key))}
        for recipient in recipients:
            self.deliveries[qid, recipient] = {"to": recipient, "qid": qid, **delivery, "time": time}

    # -- completeness --------------------------------------------------------------------------

    def deliveries_final(self) -> bool:
        """True when no delivery is to be expected, or every expected one has a final status."""
        if self.filter.get("disposition") in NOTHING_TO_DELIVER:
            return True
        final = [d for d in self.deliveries.values() if is_final(d)]
        if len(final) < len(self.deliveries):
            return False
        expected = len(set(self.recipients)) or self.expected_deliveries or (1 if self.qids else 0)
        return len(final) >= expected

    # -- the record ----------------------------------------------------------------------------

    def record(self, complete: bool) -> dict:
        record: dict = {}
        if self.guid:
            record["guid"] = self.guid
        if self.first:
            record["ts"] = self.first
        connection = {k: v for k, v in self.connection.items() if v}
        if self.sid:
            connection["sid"] = self.sid
        if connection:
            record["connection"] = connection
        envelope = {"from": self.envelope_from} if self.envelope_from is not None else {}
        if self.recipients:
            envelope["rcpts"] = list(self.recipients)
        if envelope:
            record["envelope"] = envelope
        if filter_record := self._filter_record():
            record["filter"] = filter_record
        if self.msg:
            record["msg"] = self.msg
        if self.parts:
            record["msgParts"] = self.parts
        if self.deliveries:
            record["deliveries"] = sorted(self.deliveries.values(), key=lambda d: (d["time"] or "", d["to"]))
        if self.host:  # header-less lines name no host: the agent stays unknown, not ""
            record["metadata"] = {"origin": {"data": {"agent": self.host}}}
        record["lines"] = {"count": self.line_count, "first": self.first, "last": self.last}
        record["complete"] = complete
        return record

    def _filter_record(self) -> dict:
        parts = {
            "disposition": self.filter.get("disposition"),
            "qid": self.filter.get("qid") or (self.qids[0] if self.qids else None),
            "qids": list(self.qids) if len(self.qids) > 1 else None,
            "routes": self.filter.get("routes"),
            "actions": self.filter.get("actions"),
            "modules": self.modules or None,
        }
        return {name: value for name, value in parts.items() if value is not None}


# (mod, cmd) → what a line of that kind adds to its message; other lines only count, or add
# their action when they carry one.
_HANDLERS = {
    ("mail", "env_from"): Message._env_from,
    ("mail", "env_rcpt"): Message._env_rcpt,
    ("mail", "helo"): Message._helo,
    ("mail", "attachment"): Message._attachment,
    ("mail", "msg"): Message._msg,
    ("spam", "run"): Message._spam,
    ("av", "run"): Message._av,
    ("session", "dispose"): Message._dispose,
    (None, "send"): Message._send,
}


def is_final(delivery: dict) -> bool:
    """Sent (2.x.x) and bounced (5.x.x) are final; deferred (4.x.x) and queued are not."""
    dsn = delivery.get("dsn") or ""
    if dsn[:1] in ("2", "5"):
        return True
    if dsn[:1] == "4":
        return False
    return (delivery.get("stat") or "").startswith("Sent")


def _text(value) -> str | None:
    """A field as one string (a repeated key: its last value), None when empty."""
    if value.__class__ is str:
        return value or None
    if isinstance(value, list):
        value = value[-1] if value else None
    return value if isinstance(value, str) and value != "" else None


def _get(fields: dict, key: str) -> str | None:
    """`_text(fields.get(key))`, in one step for the common case of a plain string."""
    value = fields.get(key)
    if value.__class__ is str or value is None:  # None: the key is absent, as it often is
        return value or None
    return _text(value)


def _number(value) -> int | float | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def _addresses(value) -> list[str]:
    text = _text(value) or ""
    return [part.strip().strip("<>") for part in text.split(",") if part.strip().strip("<>")]


def _part(fields: dict) -> dict:
    part = {}
    for key, name in PART_FIELDS.items():
        if value := _get(fields, key):
            part[name] = value
    if (size := _number(fields.get("size"))) is not None:
        part["detectedSizeBytes"] = size
    for key, name in PART_FLAGS.items():
        if (flag := _get(fields, key)) is not None:
            part[name] = flag not in ("0", "no", "false")
    return part
