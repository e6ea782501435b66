"""``nurture handoff``, ``rescore`` and ``report``: answering hot leads and measuring the funnel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nurture.cli.common import Table, app, out, say, state, warn, who
from nurture.errors import InvalidValueError, NurtureError, ProjectError

handoff_app = typer.Typer(no_args_is_help=True, help="Answer a hot lead: accept, reject, recycle.")
app.add_typer(handoff_app, name="handoff")


def _listed_reasons(ctx: typer.Context, answer: str) -> tuple[str, ...]:
    """scoring.yaml's shared reasons for *answer* (``reject``, ``recycle``)."""
    from nurture.language.scoring import load_scoring

    rules, _ = load_scoring(state(ctx).config().scoring_file)
    return rules.reasons.get(answer, ()) if rules is not None else ()


def _answer(ctx: typer.Context, email: str, answer: str, reason: str | None) -> None:
    from nurture.store.database import session_scope
    from nurture.store.handoffs import answer_handoff

    listed = _listed_reasons(ctx, answer) if reason is not None else ()
    if reason is not None and reason.strip().isdigit() and listed:
        number = int(reason.strip())
        if not 1 <= number <= len(listed):
            raise InvalidValueError(f"--reason {number}: the list has {len(listed)} reasons "
                                    f"(nurture handoff reasons)")  # fmt: skip
        reason = listed[number - 1]
    with session_scope(state(ctx).engine()) as session:
        handoff = answer_handoff(session, email, answer, reason, via="cli", by=who())
        status = handoff.status
    follow = {
        "accepted": "stage accepted",
        "rejected": "stage disqualified, kept with the reason",
        "recycled": "back to nurture: stage cold, engagement reset; the next pass enrolls it",
    }[status]
    say(f"{email}: {status} ({follow})")


REASON_HELP = (
    "Why (kept with the lead): one of scoring.yaml's reasons, by its text or its number "
    "(nurture handoff reasons), or other, in your own words."
)


@handoff_app.command("reasons")
def handoff_reasons(ctx: typer.Context) -> None:
    """The shared reasons of scoring.yaml for reject and recycle, numbered for --reason."""
    for answer in ("reject", "recycle"):
        listed = _listed_reasons(ctx, answer)
        say(f"{answer}:" + ("" if listed else " (none listed: say it in your words)"))
        for number, text in enumerate(listed, 1):
            say(f"  {number}. {text}")
        if listed:
            say("  or other: your own words")


@handoff_app.command("accept")
def handoff_accept(
    ctx: typer.Context, email: Annotated[str, typer.Argument(help="The lead's email.")]
) -> None:
    """Take the lead: its stage becomes accepted."""
    _answer(ctx, email, "accept", None)


@handoff_app.command("reject")
def handoff_reject(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The lead's email.")],
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP)],
) -> None:
    """Not a prospect: stage disqualified, kept with the reason, never deleted."""
    _answer(ctx, email, "reject", reason)


@handoff_app.command("recycle")
def handoff_recycle(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The lead's email.")],
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP)],
) -> None:
    """Not now: back to nurture (stage cold, engagement reset, re-enrolled by audiences)."""
    _answer(ctx, email, "recycle", reason)


@app.command()
def rescore(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help=(
                "Write nothing: say how many leads would turn hot or stop being hot, and, "
                "replayed over 90 days, which answered hand-offs would change."
            ),
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
) -> None:
    """Score every lead again now (a pass does it by itself when scoring.yaml changes)."""
    from nurture import clock
    from nurture.engine.context import Context
    from nurture.language.scoring import load_scoring
    from nurture.sales.notice import hand_off_hot_leads
    from nurture.sales.scorer import rescore as run_rescore

    st = state(ctx)
    config = st.config()
    rules, problems = load_scoring(config.scoring_file)
    if rules is None:
        for problem in problems:
            warn(str(problem))
        raise NurtureError("scoring.yaml has problems: fix them, then rescore")
    now = clock.now()
    if dry_run:
        from nurture.reports.dryrun import dry_run as run_dry
        from nurture.reports.dryrun import sentences
        from nurture.store.database import session_scope

        sales = config.settings.sales
        with session_scope(st.engine()) as session:
            result = run_dry(session, rules, now, someone=bool(sales.team or sales.notify_email),
                             default_tz=config.settings.project.default_timezone)  # fmt: skip
            session.rollback()  # read only: nothing is written
        if as_json:
            say(json.dumps(result, indent=2))
        else:
            for line in sentences(result):
                say(line)
        return
    run_ctx = Context.open(st.engine(), config)
    report = run_rescore(run_ctx, rules, now)
    hand_off_hot_leads(run_ctx, rules, now)  # the notices go out with the next delivery
    say(
        f"rescored {report.leads} leads from {report.events} events: "
        f"{report.stage_changes} changed stage, {report.hot} turned hot"
    )
    for email, old, new in report.changes:
        say(f"  {email}: {old} -> {new}")


@app.command()
def report(
    ctx: typer.Context,
    what: Annotated[
        str | None,
        typer.Argument(
            help="handoffs: how the hot-lead definition is doing (default: the funnel)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only emails, events and hand-offs since this date.")
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The funnel: stages and conversion, time to hot, each step's results, hand-offs.

    --html writes a page to open every Monday: per sequence, a diagram of its steps with
    each step's figures, its enrollments, its A/B tests and the weekly trend.
    """
    import itertools

    from nurture import clock

    if what is not None:
        if what != "handoffs":
            raise InvalidValueError(f"report {what!r}: use 'nurture report' or "
                                    "'nurture report handoffs'")  # fmt: skip
        _report_handoffs(ctx, since, html_file, as_json)
        return
    from nurture.language.sequence_files import load_sequences
    from nurture.language.templates import TemplateSet
    from nurture.reports.report import confidence, counted, funnel, shown, to_html
    from nurture.store.database import session_scope

    st = state(ctx)
    config = st.config()
    start = st.moment("--since", since) if since else None
    # The sequences as their files say: the diagrams, and which A/B variant is listed first.
    found, _ = load_sequences(config.sequences_dir, TemplateSet(config.templates_dir).exists)
    sequences = {sequence.name: sequence for sequence in found}
    with session_scope(st.engine()) as session:
        data = funnel(session, since=start, now=clock.now(), sequences=sequences)
    if html_file is not None:
        page = to_html(data, config.settings.project.name, sequences)
        try:
            html_file.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise ProjectError(f"--html {html_file}: cannot write: {exc.strerror}") from None
        warn(f"report written to {html_file}")
    if as_json:
        say(json.dumps(data, indent=2, ensure_ascii=False))
        return
    stages = Table("stage", "leads now", "ever reached", title="stages")
    for stage, count in data["stages"].items():
        stages.add_row(stage, str(count), str(data["reached"].get(stage, "")))
    out.print(stages)
    for item in data["conversion"]:
        rate = f"{100 * item['rate']:.1f}%" if item["rate"] is not None else "-"
        say(f"{item['from']} -> {item['to']}: {item['leads']} leads ({rate})")
    hot = data["days_to_hot"]
    say(
        f"days from first touch to hot: median {shown(hot['median'])}, p90 {shown(hot['p90'])} "
        f"({hot['leads']} leads)"
    )
    for sequence, rows in itertools.groupby(data["steps"], key=lambda r: r["sequence"]):
        steps = Table("step", "sent", "deliv.", "opened", "clicked", "replied", "unsub.", "tasks",
                      title=sequence, title_justify="left")  # fmt: skip
        for row in rows:
            steps.add_row(row["step"], str(row["sent"]), str(row["delivered"]),
                          *(counted(row, what) for what in ("opened", "clicked", "replied")),
                          str(row["unsubscribed"]), str(row["tasks_done"]))  # fmt: skip
        out.print(steps)
    if data["variants"]:
        tests = Table("step", "variant", "deliv.", "clicked", "replied", "difference",
                      title="A/B variants", title_justify="left")  # fmt: skip
        for row in data["variants"]:
            versus = row["compared_with"]
            sure = (
                f"clicks {confidence(row['clicked_p_value'])}, "
                f"replies {confidence(row['replied_p_value'])}"
                if versus else "(the first variant)"
            )  # fmt: skip
            tests.add_row(f"{row['sequence']}/{row['step']}", row["variant"],
                          str(row["delivered"]), counted(row, "clicked"),
                          counted(row, "replied"), sure)  # fmt: skip
        out.print(tests)
    h = data["handoffs"]
    say(
        f"hand-offs: {h['total']} ({h['accepted']} accepted, {h['rejected']} rejected, "
        f"{h['recycled']} recycled, {h['pending']} waiting); median time to answer "
        f"{shown(h['hours_to_answer_median'])} hours"
    )


def _report_handoffs(ctx: typer.Context, since: str | None, html_file: Path | None,
                     as_json: bool) -> None:  # fmt: skip
    """``nurture report handoffs``: what sales answered, per rule of scoring.yaml."""
    from nurture import clock
    from nurture.language.scoring import load_scoring
    from nurture.reports.handoffs import gather, summarize, to_html
    from nurture.store.database import session_scope

    st = state(ctx)
    config = st.config()
    start = st.moment("--since", since) if since else None
    rules, _ = load_scoring(config.scoring_file)
    with session_scope(st.engine()) as session:
        rows = gather(session, rules, start, clock.now())
    data = summarize(rows, rules)
    if html_file is not None:
        try:
            html_file.write_text(to_html(data, rows, config.settings.project.name),
                                 encoding="utf-8")  # fmt: skip
        except OSError as exc:
            raise ProjectError(f"--html {html_file}: cannot write: {exc.strerror}") from None
        warn(f"report written to {html_file}")
    if as_json:
        say(json.dumps(data, indent=2, ensure_ascii=False))
        return
    a = data["answers"]
    hours = data["median_hours_to_answer"]
    say(
        f"hand-offs: {data['handoffs']} ({a['accepted']} accepted, {a['rejected']} rejected, "
        f"{a['recycled']} recycled, {a['waiting']} waiting); median time to answer "
        f"{hours if hours is not None else '-'} hours; {data['customers']} became customers"
    )
    table = Table("rule", "kind", "hand-offs", "accepted", "rejected", "recycled")
    for rule in data["rules"]:
        table.add_row(rule["rule"], rule["kind"], *(str(rule[k]) for k in
                      ("handoffs", "accepted", "rejected", "recycled")))  # fmt: skip
    out.print(table)
    for reason in data["reasons"]:
        say(f"{reason['answer']} {reason['count']}x: {reason['reason']}")
    for text in data["suggestions"]:
        say(f"suggestion: {text}")
