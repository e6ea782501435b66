"""The sales side: scoring leads in the pass, handing hot leads to sales with the
reasons (:mod:`~nurture.sales.notice`), reminders and the daily digest, and what sales
is shown about a lead (:mod:`~nurture.sales.dossier`, :mod:`~nurture.sales.explain`).

May import: the core modules, the settings, :mod:`nurture.language`,
:mod:`nurture.store`, :mod:`nurture.engine` and :mod:`nurture.mail`. Not
:mod:`nurture.intake`: the two are siblings.
"""
