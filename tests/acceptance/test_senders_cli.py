"""``[[senders]]`` on the command line (the real CLI, in a subprocess): ``nurture check``
rejects a bad entry, or a sequence naming an unknown sender, with one clear line;
``preview`` and ``simulate`` say which sender a lead gets."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.conftest import Run
from tests.acceptance.test_language import demo, replace

__all__ = ["demo"]

SAM = '\n[[senders]]\nname = "sam"\naddress = "Sam Patel <sam@example.com>"\ndaily = 300\n'


def test_check_rejects_a_bad_senders_entry_with_one_line(nurture: Run, demo: Path) -> None:
    toml = demo / "nurture.toml"
    original = toml.read_text()
    for extra, said in [
        (SAM + SAM, "[[senders]]: two [[senders]] entries are named 'sam'"),
        (SAM.replace("Sam Patel <sam@example.com>", "Sam Patel"),
         "[[senders]] entry 1: address: 'Sam Patel' is not an address like"),
        (SAM + "warmup = { start = 400, increase = 10 }\n",
         "[[senders]] entry 1: warmup start 400 is more than daily 300"),
        (SAM + 'min_gap = "soon"\n', "[[senders]] entry 1: min_gap: bad gap 'soon'"),
        (SAM + "hourly = 500\n", "[[senders]] entry 1: hourly 500 is more than daily 300"),
        (SAM.replace("Sam Patel <sam@example.com>", "Sam <sam@example.com>, Lee <lee@example.com>"),
         "[[senders]] entry 1: address: 'Sam <sam@example.com>, Lee <lee@example.com>' names "
         "more than one address: a sender has one"),
        (SAM + "warmup = { start = 20 }\n",
         "[[senders]] entry 1: warmup increase: required setting is missing"),
        (SAM + 'smtp = { host = "smtp.example.com", prot = 25 }\n',
         "[[senders]] entry 1: smtp prot: unknown setting (did you mean 'port'?)"),
    ]:  # fmt: skip
        toml.write_text(original + extra)
        result = nurture("check", cwd=demo)
        assert result.returncode == 2, result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_check_names_an_unknown_sender_of_a_sequence_at_its_line(
    nurture: Run, demo: Path
) -> None:
    (demo / "nurture.toml").write_text((demo / "nurture.toml").read_text() + SAM)
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, 'from: "', 'senders: [sam, saam]\nfallback_from: "')
    line = next(n for n, text in enumerate(seq.read_text().splitlines(), 1)
                if text.startswith("senders:"))  # fmt: skip
    result = nurture("check", cwd=demo)
    assert result.returncode == 1, result.stdout
    assert (f"{seq}:{line}: unknown sender 'saam' in senders: no [[senders]] entry has that "
            "name (did you mean 'sam'?)") in result.stdout  # fmt: skip
    replace(seq, "senders: [sam, saam]", "senders: [sam]")
    assert nurture("check", cwd=demo).returncode == 0


def test_preview_and_simulate_say_which_sender_a_lead_gets(nurture: Run, demo: Path) -> None:
    (demo / "nurture.toml").write_text((demo / "nurture.toml").read_text() + SAM)
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, 'from: "', 'from: owner\nfallback_from: "')
    lead = "maria.lopez@brightpath.io"  # owned by sam in the demo's leads.csv
    shown = nurture("preview", "pricing-guide-welcome", "welcome", "--lead", lead, cwd=demo)
    assert shown.returncode == 0, shown.stderr
    assert "From: Sam Patel <sam@example.com>" in shown.stdout
    assert "Feedback-ID: welcome:pricing-guide-welcome:sam:nurture" in shown.stdout
    assert "sender: sam (the lead's owner)" in shown.stderr
    timeline = nurture("simulate", "pricing-guide-welcome", "--lead", lead, cwd=demo)
    assert timeline.returncode == 0, timeline.stderr
    assert "sender: sam (the lead's owner)" in timeline.stderr
    as_json = nurture("simulate", "pricing-guide-welcome", "--lead", lead, "--json", cwd=demo)
    assert as_json.returncode == 0, as_json.stderr
    emails = [e for e in json.loads(as_json.stdout) if e["kind"] == "email"]
    assert emails and all(e["sender"] == {"address": "Sam Patel <sam@example.com>",
                                          "name": "sam", "why": "the lead's owner"}
                          for e in emails)  # fmt: skip


def test_senders_list_shows_a_warm_up_only_for_a_sender_that_has_one(
    nurture: Run, demo: Path
) -> None:
    lee = SAM.replace("sam", "lee").replace("Sam Patel", "Lee Chen")
    warming = lee + "warmup = { start = 20, increase = 10 }\n"
    (demo / "nurture.toml").write_text((demo / "nurture.toml").read_text() + SAM + warming)
    assert nurture("db", "upgrade", cwd=demo).returncode == 0
    listed = nurture("senders", "list", cwd=demo)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line for line in listed.stdout.splitlines()
            if line.split()[1:2] in (["sam"], ["lee"])}  # fmt: skip
    assert "done" not in rows["sam"] and "20 today" in rows["lee"], listed.stdout


def test_check_warns_of_from_owner_without_a_fallback(nurture: Run, demo: Path) -> None:
    (demo / "nurture.toml").write_text((demo / "nurture.toml").read_text() + SAM)
    seq = demo / "sequences" / "pricing-guide-welcome.yaml"
    replace(seq, 'from: "Ana Ruiz <ana@example.com>"', "from: owner")
    result = nurture("check", cwd=demo)
    assert result.returncode == 0, result.stdout
    warning = (f"{seq}:4: warning: from: owner without fallback_from: a lead whose owner has no "
               "[[senders]] entry gets its email from [sales] from_address")  # fmt: skip
    assert warning in result.stdout
    assert nurture("check", "--strict", cwd=demo).returncode == 1
