"""A hand-over journal written before the shared append-only module is still read.

The fixture is a dead worker's journal as today's format writes it, byte for byte: a JSON
header naming the boot, then ``H <send id>`` (handing over), ``S <send id> <provider id>``
(sent) and ``O [json]`` (any other outcome) lines, the last one torn by a power cut.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.ledger.journal import Journal, Liveness, adopt, boot_id, dead_journals, parse
from engine.types import Message, SendResult, SendStatus

RECORDS = (
    b"H 7\n"
    b"S 7 <p7@mail.example>\n"
    b"H 8\n"
    b'O [8, "permanent_failure", null, "550 no such user", true]\n'
    b"H 9\n"
    b"S 9 <p9@mai"  # torn by a power cut: not a record
)


def header(boot: str | None) -> bytes:
    return json.dumps({"boot": boot, "pid": 4242}).encode() + b"\n"


def message(send_id: int) -> Message:
    return Message(
        send_id, f"<{send_id}@t.example>", "from@example.com", "to@example.com", "s", "h", "t"
    )


def test_an_old_journal_is_found_dead_and_read(tmp_path: Path) -> None:
    (tmp_path / "w1.journal").write_bytes(header(boot_id()) + RECORDS)
    assert dead_journals(tmp_path) == ["w1"]
    with adopt(tmp_path, "w1") as (liveness, state):
        assert liveness == Liveness.DEAD and state is not None
        assert state.complete == (boot_id() is not None)
        assert state.handed == {7, 8, 9}
        assert state.outcomes == {
            7: SendResult(7, SendStatus.SENT, "<p7@mail.example>"),
            8: SendResult(8, SendStatus.PERMANENT_FAILURE, None, "550 no such user", True),
        }
    assert not (tmp_path / "w1.journal").exists()  # settled, so deleted
    with adopt(tmp_path, "w1") as (liveness, state):
        assert (liveness, state) == (Liveness.MISSING, None)


def test_a_torn_header_or_another_boot_proves_nothing_missing() -> None:
    assert not parse(header("another-boot") + RECORDS).complete
    assert parse(b'{"boot": "x", "pi').outcomes == {}
    assert not parse(b"").complete


def test_a_journal_written_now_has_the_same_bytes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "w2").open()
    assert dead_journals(tmp_path) == []  # locked while its worker lives
    with adopt(tmp_path, "w2") as (liveness, _):
        assert liveness == Liveness.LIVE
    journal.handing_over(message(7))
    journal.outcome(SendResult(7, SendStatus.SENT, "<p7@mail.example>"))
    journal.handing_over(message(8))
    journal.outcome(SendResult(8, SendStatus.PERMANENT_FAILURE, None, "550 no such user", True))
    journal.handing_over(message(9))
    journal.close(discard=False)
    data = (tmp_path / "w2.journal").read_bytes()
    first, _, rest = data.partition(b"\n")
    assert json.loads(first)["boot"] == boot_id()
    assert rest == RECORDS[: RECORDS.rindex(b"S 9")]
