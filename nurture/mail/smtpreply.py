"""What an SMTP server's refusal means, by its reply code and its enhanced status code
(RFC 3463): is the recipient gone, is the server refusing *us*, or is it this message?

Pure: a function of the reply and the stage of the transaction it answered.
"""

from __future__ import annotations

import re
from typing import Literal

#: ``retry``: try again later (4xx). ``bounce``: the recipient's address is gone for good
#: (the lead is bounced). ``refused``: the server refuses to send for us (a relay,
#: authentication or policy refusal, or a refused sender): a sending problem, the lead is
#: not at fault and stays subscribed, and delivery stops. ``fail``: this message is
#: refused for good (too large, bad content), the lead stays subscribed.
Verdict = Literal["retry", "bounce", "refused", "fail"]
Stage = Literal["mail", "rcpt", "data"]

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")

#: Enhanced codes that say the recipient's mailbox is gone: 5.1.x (bad address, no
#: such mailbox or domain, moved) but for 5.1.7/5.1.8 (our sender address), and 5.2.1
#: (mailbox disabled), 5.2.2 (mailbox full, for good).
_SENDER_ADDRESS = {(1, 7), (1, 8)}
_MAILBOX_GONE = {(2, 1), (2, 2)}

#: Without an enhanced code, words of a refusal aimed at us rather than the recipient.
_POLICY_WORDS = re.compile(
    r"relay|authenticat|\bauth\b|not permitted|access denied|blocked|block ?list|"
    r"black ?list|spamhaus|\bspam\b|policy|rejected for policy|not allowed",
    re.IGNORECASE,
)
#: Words that say the server refuses our *sender* address, not the recipient (Exim's
#: "Sender verify failed", Postfix's "Sender address rejected"), whatever the code.
_SENDER_WORDS = re.compile(
    r"sender (address )?(verify|verification) failed|sender (address )?rejected|"
    r"sender (address )?(is )?(unknown|not allowed|not authori[sz]ed|denied)|"
    r"sender domain|from address (is )?(not allowed|rejected|unknown)",
    re.IGNORECASE,
)
#: Without an enhanced code, words that say the mailbox does not exist.
_GONE_WORDS = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|mailbox (is )?unavailable|"
    r"does not exist|doesn't exist|unknown recipient|recipient unknown|invalid recipient|"
    r"mailbox not found|address rejected|not our customer|no mailbox",
    re.IGNORECASE,
)


def enhanced_code(text: str) -> tuple[int, int, int] | None:
    """The enhanced status code a reply's text starts with (``5.1.1``), if any."""
    found = _ENHANCED.match(text or "")
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def classify(code: int, text: str, stage: Stage) -> Verdict:
    """What the reply *code* ``text`` to the *stage* command (MAIL FROM, RCPT TO or the
    message's DATA) means for the message and the lead.

    =========================================  ===========================================
    reply                                      verdict
    =========================================  ===========================================
    any 4xx                                    ``retry``
    any 5xx to MAIL FROM                       ``refused`` (our sender is refused)
    5xx whose words refuse our sender          ``refused`` ("Sender verify failed")
    5.1.x (not 5.1.7/5.1.8), 5.2.1, 5.2.2      ``bounce``
    5.1.7, 5.1.8, 5.7.x                        ``refused`` (relay, auth, policy, sender)
    other 5.x.x                                ``fail`` (this message only)
    5xx, no enhanced code, policy words        ``refused``
    550/551/553 (RCPT), or "user unknown"…     ``bounce``
    other 5xx                                  ``fail``
    =========================================  ===========================================
    """
    if code < 500:
        return "retry"
    if stage == "mail" or _SENDER_WORDS.search(text or ""):
        return "refused"
    enhanced = enhanced_code(text)
    if enhanced is not None and enhanced[0] == 5:
        subject_detail = enhanced[1], enhanced[2]
        if subject_detail in _SENDER_ADDRESS or enhanced[1] == 7:
            return "refused"
        if enhanced[1] == 1 or subject_detail in _MAILBOX_GONE:
            return "bounce"
        return "fail"
    if _POLICY_WORDS.search(text or ""):
        return "refused"
    if _GONE_WORDS.search(text or "") or (stage == "rcpt" and code in (550, 551, 553)):
        return "bounce"
    return "fail"
