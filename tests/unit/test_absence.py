"""Reading out-of-office answers (pure): what counts as one, and the day the person is
back, read from the answer's own words in eight languages."""

from __future__ import annotations

from datetime import UTC, date, datetime
from email.message import EmailMessage

import pytest

from nurture.mail.absence import DEFAULT_AWAY, out_of_office, read_absence, return_date
from nurture.mail.replies import classify

TODAY = date(2027, 3, 3)  # a Wednesday


def mail(subject: str, body: str = "hello", **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Tom Ng <tom@acme.com>"
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def kind(message: EmailMessage) -> str:
    return classify(message, secret="k" * 32, unsubscribe_mailto="").kind


@pytest.mark.parametrize(
    "subject",
    [
        "Absence management demo?",
        "Urlaubsplanung 2027 \u2013 Angebot",
        "Ausencia de respuesta a mi pedido",
        "Assenza di fatture",
        "On leave policy software - quote",
        "Automatic reply template question",
        "ooo-la-la pricing",
        "Urlop \u2013 pytanie o ofertę",
        "Absent-minded question about pricing",
        "Re: Out of office",
        "AW: Abwesenheit",
    ],
)
def test_a_person_s_subject_that_starts_like_an_auto_reply_is_a_reply(subject: str) -> None:
    assert out_of_office(mail(subject)) is None
    assert kind(mail(subject)) == "reply"


@pytest.mark.parametrize(
    "subject",
    [
        "Out of office",
        "Out of Office: Re: your guide",
        "OOO",
        "Automatic reply: Join our webinar on 20 June",
        "Auto: your guide",
        "Abwesenheitsnotiz: Ihr Leitfaden",
        "Abwesend",
        "Absence du bureau",
        "Réponse automatique : votre guide",
        "Fuera de la oficina",
        "Respuesta automática: su guía",
        "Fuori sede",
        "Risposta automatica",
        "Ausente",
        "Resposta automática",
        "Afwezig",
        "Automatisch antwoord",
        "Nieobecność",
        "Automatyczna odpowiedź",
        "[EXT] Out of office - back Monday",
    ],
)
def test_the_usual_auto_reply_subjects_are_out_of_office(subject: str) -> None:
    assert out_of_office(mail(subject))
    assert kind(mail(subject)) == "out_of_office"


def test_an_autoreply_header_that_says_no_is_not_automatic() -> None:
    assert out_of_office(mail("Question", X_Autoreply="no")) is None
    assert kind(mail("Question", X_Autoreply="no")) == "reply"
    assert out_of_office(mail("Question", X_Autoreply="yes")) == "X-Autoreply"


@pytest.mark.parametrize(
    ("text", "back"),
    [
        # a date without a year is in the year nearest to the day it came
        ("I am back on 3 March.", date(2027, 3, 3)),
        ("Back on 2 March.", date(2027, 3, 2)),
        ("Out until 5 January.", date(2027, 1, 5)),
        # numeric dates are day first outside English
        ("Retour le 10/03.", date(2027, 3, 10)),
        ("Ich bin ab 10.03. wieder da.", date(2027, 3, 10)),
        ("I'm away, back 10.3.", date(2027, 3, 10)),
        # in English, only when the order cannot be mistaken
        ("Back 13/03.", date(2027, 3, 13)),
        ("Back 03/13.", date(2027, 3, 13)),
        ("Back 03/10.", None),
        # bare numbers are no dates; a cue's date wins over others
        ("Version 2.5 released. I am away until Friday.", date(2027, 3, 5)),
        ("Our office is at 12 Main Street, open 9-17. Back in two weeks.", date(2027, 3, 17)),
        ("I am back on 5 March. For urgent matters before 30 April, call Ana.",
         date(2027, 3, 5)),
        ("Join our webinar on 20 June! I am out until 5 March.", date(2027, 3, 5)),
        ("Call me on 0171 12.04.55", None),
        ("Out of office until 12 March 2031.", date(2031, 3, 12)),
        # in eight languages
        ("I am out of the office until March 12.", date(2027, 3, 12)),
        ("Ich bin bis zum 12. März nicht im Büro.", date(2027, 3, 12)),
        ("Je serai absent jusqu'au 12 mars.", date(2027, 3, 12)),
        ("Estaré fuera de la oficina hasta el 12 de marzo.", date(2027, 3, 12)),
        ("Sarò fuori ufficio fino al 12 marzo.", date(2027, 3, 12)),
        ("Estarei ausente até 12 de março.", date(2027, 3, 12)),
        ("Ik ben afwezig tot 12 maart.", date(2027, 3, 12)),
        ("Jestem poza biurem do 12 marca.", date(2027, 3, 12)),
        # no cue: the latest date written with its month
        ("On holiday, 12 March - 20 March.", date(2027, 3, 20)),
        ("Thanks, talk soon.", None),
    ],
)  # fmt: skip
def test_the_return_date_is_read_from_the_answer(text: str, back: date | None) -> None:
    assert return_date(text, TODAY) == back


NOW = datetime(2027, 3, 3, 9, 0, tzinfo=UTC)


def test_the_subject_is_never_read_for_the_date() -> None:
    # Given our own subject, quoted, names a date
    answer = mail("Automatische Antwort: Einladung zum Webinar am 15. Dezember",
                  "Ich bin bis 8. März nicht im Büro.", Auto_Submitted="auto-replied")  # fmt: skip
    away = read_absence(answer, "Europe/Berlin", NOW)
    assert (away.until, away.read) == (date(2027, 3, 8), True)
    # And with no date in the body, the subject's does not stand in for one
    answer = mail("Automatic reply: Join our webinar on 20 June", "I am travelling.")
    away = read_absence(answer, "Europe/Berlin", NOW)
    assert (away.until, away.read) == (TODAY + DEFAULT_AWAY, False)


def test_a_return_today_or_past_means_back_now() -> None:
    for body in ("I am back on 3 March.", "Back on 2 March."):
        away = read_absence(mail("Out of office", body), "UTC", NOW)
        assert away.resume_at is None and away.read
        assert away.as_data()["back_now"] is True


def test_a_return_too_far_ahead_is_not_believed() -> None:
    away = read_absence(mail("Out of office", "Back on 20 June."), "UTC", NOW)
    assert (away.until, away.read, away.ignored) == (TODAY + DEFAULT_AWAY, False,
                                                     date(2027, 6, 20))  # fmt: skip
    assert away.resume_at is not None and away.resume_at.date() == date(2027, 3, 11)
    # within the longest pause it is
    away = read_absence(mail("Out of office", "Back on 20 April."), "UTC", NOW)
    assert (away.until, away.read) == (date(2027, 4, 20), True)
